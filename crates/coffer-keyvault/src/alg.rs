//! Key Vault algorithm names (JsonWebKeyEncryptionAlgorithm, JsonWebKeySignatureAlgorithm).

use crate::{KvError, Result};

/// RSA encryption / key-wrapping algorithms. `RSA1_5` is deliberately absent:
/// parsing it yields a `BadParameter` error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncryptionAlgorithm {
    /// RSA-OAEP with SHA-1 and MGF1-SHA-1.
    RsaOaep,
    /// RSA-OAEP with SHA-256 and MGF1-SHA-256 (the default).
    RsaOaep256,
}

impl EncryptionAlgorithm {
    /// Parses a Key Vault algorithm name (case-insensitive).
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_uppercase().as_str() {
            "RSA-OAEP-256" => Ok(Self::RsaOaep256),
            "RSA-OAEP" => Ok(Self::RsaOaep),
            "RSA1_5" => Err(KvError::BadParameter(
                "algorithm RSA1_5 (RSAES-PKCS1-v1_5) is refused: it is vulnerable to padding-oracle \
                 attacks; use RSA-OAEP-256 (or RSA-OAEP)"
                    .into(),
            )),
            _ => Err(KvError::BadParameter(format!(
                "unsupported encryption algorithm {s:?}: use RSA-OAEP-256 or RSA-OAEP"
            ))),
        }
    }

    /// The Key Vault name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RsaOaep => "RSA-OAEP",
            Self::RsaOaep256 => "RSA-OAEP-256",
        }
    }

    pub(crate) fn oaep(self) -> &'static aws_lc_rs::rsa::OaepAlgorithm {
        match self {
            Self::RsaOaep => &aws_lc_rs::rsa::OAEP_SHA1_MGF1SHA1,
            Self::RsaOaep256 => &aws_lc_rs::rsa::OAEP_SHA256_MGF1SHA256,
        }
    }
}

/// Signature algorithms: RSASSA-PKCS1-v1_5, RSASSA-PSS and ECDSA (raw r‖s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum SignatureAlgorithm {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    Es512,
}

impl SignatureAlgorithm {
    /// Parses a Key Vault algorithm name (case-insensitive).
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_uppercase().as_str() {
            "RS256" => Self::Rs256,
            "RS384" => Self::Rs384,
            "RS512" => Self::Rs512,
            "PS256" => Self::Ps256,
            "PS384" => Self::Ps384,
            "PS512" => Self::Ps512,
            "ES256" => Self::Es256,
            "ES384" => Self::Es384,
            "ES512" => Self::Es512,
            _ => {
                return Err(KvError::BadParameter(format!(
                    "unsupported signature algorithm {s:?}: use RS256/384/512, PS256/384/512 or ES256/384/512"
                )));
            }
        })
    }

    /// The Key Vault name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Rs384 => "RS384",
            Self::Rs512 => "RS512",
            Self::Ps256 => "PS256",
            Self::Ps384 => "PS384",
            Self::Ps512 => "PS512",
            Self::Es256 => "ES256",
            Self::Es384 => "ES384",
            Self::Es512 => "ES512",
        }
    }

    /// Refuses a digest of the wrong length for this algorithm.
    pub(crate) fn check_digest(self, digest: &[u8]) -> Result<()> {
        let want = self.digest().output_len();
        if digest.len() == want {
            Ok(())
        } else {
            Err(KvError::BadParameter(format!(
                "{} signs a {want}-byte digest; the value is {} bytes",
                self.as_str(),
                digest.len()
            )))
        }
    }

    /// The digest the caller must supply.
    pub(crate) fn digest(self) -> &'static aws_lc_rs::digest::Algorithm {
        use aws_lc_rs::digest::{SHA256, SHA384, SHA512};
        match self {
            Self::Rs256 | Self::Ps256 | Self::Es256 => &SHA256,
            Self::Rs384 | Self::Ps384 | Self::Es384 => &SHA384,
            Self::Rs512 | Self::Ps512 | Self::Es512 => &SHA512,
        }
    }
}
