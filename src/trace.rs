//! W3C trace context (`traceparent`) across settle's hops: a webhook's request, the queued event's
//! AMQP headers, the worker's transaction, the outbox row and the reconciliation event a
//! subscriber receives all carry one trace. Spans are `tracing`'s; `telemetry` installs the layer
//! that gives them OpenTelemetry ids (and exports them over OTLP when an endpoint is set). This
//! module only reads and writes the `traceparent` text, validated: it arrives from outside (a
//! load balancer's header, a message's headers) and is kept only when it parses.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The header (HTTP and AMQP) that carries a trace's context.
pub const TRACEPARENT: &str = "traceparent";

/// A `traceparent` is 55 characters (version 00); anything much longer is not one.
const MAX_TRACEPARENT: usize = 128;

/// The `traceparent` of `span`, when it belongs to a trace (the OpenTelemetry layer is installed).
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// The trace id of `span` in hex, when it belongs to a trace.
pub fn trace_id_of(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// `text` as a `traceparent` to continue, if it is one.
pub fn parse(text: &str) -> Option<opentelemetry::Context> {
    if text.len() > MAX_TRACEPARENT {
        return None;
    }
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), text.to_owned())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    context.span().span_context().is_valid().then_some(context)
}

/// Makes `span` continue the trace `traceparent` names (when it names one), and records the
/// trace id in the span's `trace_id` field, so every log line inside carries it.
pub fn continue_in(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(parent) = traceparent.and_then(parse) {
        // Fails only when the span is disabled or has started: nothing to continue then.
        let _ = span.set_parent(parent);
    }
    if let Some(id) = trace_id_of(span) {
        span.record("trace_id", id.as_str());
    }
}

/// Links `span` to the trace `traceparent` names: a span that serves several traces at once (a
/// batch of events in one transaction) keeps each of them.
pub fn link(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(parent) = traceparent.and_then(parse) {
        span.add_link(parent.span().span_context().clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_well_formed_traceparent_is_continued() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = parse(good).unwrap();
        assert_eq!(
            context.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            &"0".repeat(4096),
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
    }
}
