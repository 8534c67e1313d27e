//! The alerts and the dashboard that ship with settle (`deploy/`), checked like code with the
//! real `promtool` (Debian's `prometheus`, installed by `scripts/services.sh`): the rules parse
//! and their unit tests pass, every alert is tested firing and silent, every dashboard query
//! parses (as a recording rule) and names only metrics settle exports, and a real `/metrics`
//! scrape passes `promtool check metrics` with the sampled gauges in it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::helpers::*;

fn in_repository(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(in_repository(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Runs `promtool` with `args` (and `input` on its standard input): exit code and all output.
fn promtool(args: &[&str], input: Option<&str>) -> (i32, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; scripts/services.sh installs it)");
    if let Some(input) = input {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

/// The metric names settle declares (`src/telemetry.rs`, where each gets its HELP text).
fn declared_metrics() -> BTreeSet<String> {
    metric_names(&read("src/telemetry.rs"))
}

/// Every `settle_…` name in `text`, a histogram's series named by the histogram.
fn metric_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("settle_"))
        .map(|word| {
            ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| word.strip_suffix(suffix))
                .unwrap_or(word)
                .to_owned()
        })
        .collect()
}

/// The alert names of `deploy/prometheus/alerts.yml`.
fn alert_names() -> Vec<String> {
    read("deploy/prometheus/alerts.yml")
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- alert: "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_alert_rules_parse_and_their_unit_tests_pass() {
    let rules = in_repository("deploy/prometheus/alerts.yml");
    let (code, output) = promtool(&["check", "rules", rules.to_str().unwrap()], None);
    assert_eq!(code, 0, "{output}");
    assert!(
        output.contains(&format!("SUCCESS: {} rules found", alert_names().len())),
        "{output}"
    );
    let tests = in_repository("deploy/prometheus/tests/alerts_test.yml");
    let (code, output) = promtool(&["test", "rules", tests.to_str().unwrap()], None);
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("SUCCESS"), "{output}");
}

#[test]
fn every_alert_is_tested_firing_and_staying_silent_and_has_a_runbook_section() {
    let tests = read("deploy/prometheus/tests/alerts_test.yml");
    let lines: Vec<&str> = tests.lines().map(str::trim).collect();
    let (mut firing, mut silent) = (BTreeSet::new(), BTreeSet::new());
    for (i, line) in lines.iter().enumerate() {
        if let Some(name) = line.strip_prefix("alertname: ") {
            match lines.get(i + 1) {
                Some(&"exp_alerts: []") => silent.insert(name.to_owned()),
                Some(&"exp_alerts:") => firing.insert(name.to_owned()),
                other => panic!("{name}: expected exp_alerts after it, got {other:?}"),
            };
        }
    }
    let runbook = read("docs/runbook.md");
    let rules = read("deploy/prometheus/alerts.yml");
    let names = alert_names();
    assert!(names.len() >= 19, "{names:?}");
    for name in names {
        assert!(firing.contains(&name), "{name} has no test that fires it");
        assert!(
            silent.contains(&name),
            "{name} has no test that keeps it silent"
        );
        let anchor = name.to_lowercase();
        assert!(
            runbook.contains(&format!("## {name}\n")),
            "docs/runbook.md has no section `## {name}`"
        );
        assert!(
            rules.contains(&format!("runbook_url: docs/runbook.md#{anchor}")),
            "{name}'s runbook_url"
        );
    }
}

#[test]
fn prometheus_loads_the_rules_from_the_shipped_configuration() {
    let rules = in_repository("deploy/prometheus/alerts.yml");
    let config = read("deploy/prometheus/prometheus.yml")
        .replace("/etc/prometheus/alerts.yml", rules.to_str().unwrap());
    let dir = std::env::temp_dir().join(format!("settle-prometheus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("prometheus.yml");
    std::fs::write(&path, config).unwrap();
    let (code, output) = promtool(&["check", "config", path.to_str().unwrap()], None);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(code, 0, "{output}");
}

#[test]
fn every_dashboard_query_parses_and_names_only_metrics_settle_exports() {
    let dashboard: Value = serde_json::from_str(&read("deploy/grafana/settle.json")).unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let mut queries = 0;
    let mut named = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            // Grafana's own variables, as Grafana substitutes them.
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "5m")
                .replace("$__range", "6h");
            named.extend(metric_names(&expr));
            let record = format!(
                "dashboard:panel_{}_{}",
                panel["id"],
                target["refId"].as_str().unwrap()
            );
            // A JSON string is a YAML double-quoted scalar.
            rules.push_str(&format!(
                "      - record: {record}\n        expr: {}\n",
                serde_json::to_string(&expr).unwrap()
            ));
            queries += 1;
        }
        assert!(
            panel["type"] == "row" || panel["description"].as_str().is_some_and(|d| !d.is_empty()),
            "panel {} says what it shows",
            panel["title"]
        );
    }
    assert!(queries >= 20, "{queries} queries");
    let path = std::env::temp_dir().join(format!("settle-dashboard-{}.yml", std::process::id()));
    std::fs::write(&path, rules).unwrap();
    let (code, output) = promtool(&["check", "rules", path.to_str().unwrap()], None);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(code, 0, "{output}");
    assert!(
        output.contains(&format!("SUCCESS: {queries} rules found")),
        "{output}"
    );
    // A renamed metric breaks the build here, not the dashboard or an alert in production.
    named.extend(metric_names(&read("deploy/prometheus/alerts.yml")));
    let declared = declared_metrics();
    let unknown: Vec<&String> = named.difference(&declared).collect();
    assert!(unknown.is_empty(), "not exported by settle: {unknown:?}");
}

#[tokio::test]
async fn a_real_scrape_passes_promtool_with_the_sampled_gauges_and_the_money_in_it() {
    let app = spawn_app_with(AppOptions {
        role: settle::role::Role::Run,
        tweak: Box::new(|settings| {
            Retries::PATIENT.apply_to(settings);
            settings.telemetry.sample_interval_secs = 1;
        }),
        ..AppOptions::default()
    })
    .await;
    // An invoice paid 60.00 where it owed 50.00; another paid, then disputed.
    app.create_customer("obs").await;
    for (invoice, intent, due, paid) in [
        ("inv_over", "pi_over", 5000, 6000),
        ("inv_disp", "pi_disp", 3000, 3000),
    ] {
        app.create_invoice(invoice, "obs", None, "GBP", due).await;
        app.register_payment(invoice, "STRIPE", intent, due).await;
        app.deliver_stripe(
            &StripeEvent::new("payment_intent.succeeded", &format!("evt_{intent}"))
                .payment(intent, paid, "gbp")
                .to_bytes(),
        )
        .await;
        app.wait_invoice_status(invoice, "PAID").await;
    }
    app.deliver_stripe(
        &StripeEvent::new("charge.dispute.created", "evt_obs_dispute")
            .dispute("dp_obs", "pi_disp", 3000, "gbp", "needs_response")
            .to_bytes(),
    )
    .await;
    assert_eq!(
        app.wait_processed("STRIPE", "evt_obs_dispute").await,
        "applied"
    );
    let reconcile_queue = app.queue("reconcile");
    let expected = [
        "settle_broker_connected 1".to_owned(),
        "settle_broker_blocked 0".to_owned(),
        format!("settle_queue_messages{{queue=\"{reconcile_queue}\"}} 0"),
        "settle_lease_held{lease=\"relay\"} 1".to_owned(),
        "settle_invoices_overpaid 1".to_owned(),
        "settle_payouts_partially_matched 0".to_owned(),
        "settle_outbox_published_total{type=\"payment.disputed\"} 1".to_owned(),
        "settle_money_announced_minor_units_total{movement=\"collected\",currency=\"GBP\"} 9000"
            .to_owned(),
        "settle_money_announced_minor_units_total{movement=\"disputed\",currency=\"GBP\"} 3000"
            .to_owned(),
    ];
    // Polled with a deadline: the gauges are sampled every second, the relay publishes in passes.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let scrape = loop {
        let scrape = app.metrics_text().await;
        let missing: Vec<&String> = expected
            .iter()
            .filter(|line| !scrape.lines().any(|l| l == line.as_str()))
            .collect();
        if missing.is_empty() {
            break scrape;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "missing from /metrics: {missing:?}\n{scrape}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await; // poll interval
    };
    let (code, output) = promtool(&["check", "metrics"], Some(&scrape));
    assert_eq!(code, 0, "{output}");
    assert_eq!(output.trim(), "", "promtool has remarks: {output}");
    // Every metric in the scrape is one settle declares, with its HELP.
    let declared = declared_metrics();
    for name in metric_names(&scrape) {
        assert!(declared.contains(&name), "{name} is not declared");
        assert!(
            scrape.contains(&format!("# HELP {name} ")),
            "{name} has no HELP"
        );
    }
    app.stop().await;
}
