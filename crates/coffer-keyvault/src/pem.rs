//! Minimal PEM decoding and encoding (RFC 7468), enough for private-key import and
//! public-key download. Decoded bytes stay in zeroizing buffers.

use base64::Engine as _;
use zeroize::Zeroizing;

use crate::{KvError, Result};

/// The label and DER bytes of the first PEM block in `text`.
pub(crate) fn decode(text: &str) -> Result<(String, Zeroizing<Vec<u8>>)> {
    let bad = |m: &str| KvError::BadParameter(format!("the PEM file is not usable: {m}"));
    let start = text
        .find("-----BEGIN ")
        .ok_or_else(|| bad("no BEGIN line"))?;
    let rest = &text[start + 11..];
    let label_end = rest
        .find("-----")
        .ok_or_else(|| bad("malformed BEGIN line"))?;
    let label = rest[..label_end].to_owned();
    let body_start = label_end + 5;
    let end_marker = format!("-----END {label}-----");
    let body_end = rest.find(&end_marker).ok_or_else(|| bad("no END line"))?;
    let body = &rest[body_start..body_end];
    if body.contains("Proc-Type:") || label.contains("ENCRYPTED") {
        return Err(bad(
            "encrypted private keys are not supported; export it unencrypted",
        ));
    }
    let b64: Zeroizing<String> =
        Zeroizing::new(body.chars().filter(|c| !c.is_ascii_whitespace()).collect());
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .map_err(|_| bad("invalid base64"))?;
    Ok((label, Zeroizing::new(der)))
}

/// PEM text of `der` under `label`.
pub(crate) fn encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
