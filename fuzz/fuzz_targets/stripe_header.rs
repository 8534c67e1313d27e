//! Fuzzes the `Stripe-Signature` header parser and the verifier built on it.
//!
//! Input layout: `[ctl] header-bytes [\n body-bytes]`.
//! * `ctl` (as `i8`, times 5 seconds) puts the verifier's clock near the header's own timestamp, so
//!   both sides of the tolerance window are reached without guessing a 10-digit clock.
//! * The header is taken as lossy UTF-8. Every `$` in it is replaced with the genuine `v1` MAC for
//!   the header's timestamp text and the body, so the fuzzer also exercises the accepting path; a
//!   random header alone would essentially never carry a valid HMAC.
//! * The body is the raw bytes after the first `\n` (a header value never contains one).
//!
//! Invariants checked: nothing panics; a parsed header has at least one `v1` signature and a
//! timestamp text that parses back to its timestamp; `verify` accepts exactly when the header
//! parses, carries the correct HMAC for its timestamp text, and is within the tolerance (so an
//! accepted header always contains the correct signature); `sign` round-trips through both.

#![no_main]

use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;
use settle::ingress::SignatureError;
use settle::ingress::signature::hmac_sha256_hex;
use settle::ingress::stripe::{parse_signature_header, sign, verify};

const SECRET: &str = "whsec_fuzzing_only_not_a_real_secret";
const OTHER_SECRET: &str = "whsec_some_other_secret";
const TOLERANCE_SECS: u64 = 300;
const DEFAULT_NOW: i64 = 1_700_000_000;

/// The `v1` MAC Stripe would send for this timestamp text (as written) and body.
fn expected_mac(secret: &SecretString, timestamp_text: &str, body: &[u8]) -> String {
    hmac_sha256_hex(secret, &[timestamp_text.as_bytes(), b".", body])
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let (header_bytes, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let secret = SecretString::from(SECRET);
    let raw_header = String::from_utf8_lossy(header_bytes);

    // Splice the genuine MAC into every `$`, keyed on the timestamp text the header parses to.
    let header = if raw_header.contains('$') {
        let timestamp_text = match parse_signature_header(&raw_header) {
            Ok(parsed) => parsed.timestamp_text.to_owned(),
            Err(_) => DEFAULT_NOW.to_string(),
        };
        raw_header.replace('$', &expected_mac(&secret, &timestamp_text, body))
    } else {
        raw_header.into_owned()
    };

    let parsed = parse_signature_header(&header);
    let now = match &parsed {
        Ok(p) => p.timestamp.saturating_add(i64::from(ctl as i8) * 5),
        Err(_) => DEFAULT_NOW,
    };
    let secrets = [secret.clone()];
    let result = verify(Some(&header), body, &secrets, TOLERANCE_SECS, now);

    match &parsed {
        Err(e) => {
            assert!(matches!(e, SignatureError::MalformedHeader(_)), "{e:?}");
            assert_eq!(
                result,
                Err(e.clone()),
                "verify must fail the way parsing does"
            );
        }
        Ok(p) => {
            assert!(
                !p.v1_signatures.is_empty(),
                "parsed header without v1: {header:?}"
            );
            assert_eq!(p.timestamp_text.parse::<i64>(), Ok(p.timestamp));
            assert!(header.contains(&format!("t={}", p.timestamp_text)));
            for sig in &p.v1_signatures {
                assert!(!sig.contains(','), "v1 signature spans an item: {sig:?}");
                assert!(header.contains(&format!("v1={sig}")));
            }

            let expected = expected_mac(&secret, p.timestamp_text, body);
            if p.timestamp_text == p.timestamp.to_string() {
                // Canonical timestamp text: `sign` must produce exactly the MAC verify wants.
                assert_eq!(
                    sign(&secret, p.timestamp, body),
                    format!("t={},v1={expected}", p.timestamp)
                );
            }
            let signed = p.v1_signatures.contains(&expected.as_str());
            let fresh = now.abs_diff(p.timestamp) <= TOLERANCE_SECS;
            if result.is_ok() {
                assert!(
                    header.contains(&expected),
                    "accepted without the correct MAC: {header:?}"
                );
            }
            let want = match (signed, fresh) {
                (false, _) => Err(SignatureError::Mismatch),
                (true, false) => Err(SignatureError::OutsideTolerance),
                (true, true) => Ok(()),
            };
            assert_eq!(result, want, "header {header:?}, now {now}");

            // Rotation: adding a second, unrelated secret never changes the outcome.
            let rotating = [SecretString::from(OTHER_SECRET), secret.clone()];
            assert_eq!(
                verify(Some(&header), body, &rotating, TOLERANCE_SECS, now),
                result
            );
            // A different secret alone never accepts a header signed only for ours.
            let other_only = [SecretString::from(OTHER_SECRET)];
            let other_ok = verify(Some(&header), body, &other_only, TOLERANCE_SECS, now).is_ok();
            if other_ok {
                let other_mac = expected_mac(&other_only[0], p.timestamp_text, body);
                assert!(p.v1_signatures.contains(&other_mac.as_str()));
            }
        }
    }

    // Unconditional edges: no secret configured, no header.
    assert_eq!(
        verify(Some(&header), body, &[], TOLERANCE_SECS, now),
        Err(SignatureError::NotConfigured)
    );
    assert_eq!(
        verify(None, body, &secrets, TOLERANCE_SECS, now),
        Err(SignatureError::MissingHeader)
    );

    // `sign` round-trips at the clock in use, for any timestamp and body.
    let signed_header = sign(&secret, now, body);
    let reparsed = parse_signature_header(&signed_header).expect("sign output parses");
    assert_eq!(reparsed.timestamp, now);
    assert_eq!(reparsed.v1_signatures.len(), 1);
    assert_eq!(
        verify(Some(&signed_header), body, &secrets, TOLERANCE_SECS, now),
        Ok(())
    );
});
