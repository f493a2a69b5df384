//! Key material: generation, PEM import, sealing, public export and operations.

use std::{
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use aws_lc_rs::{
    digest::{self, Digest},
    encoding::AsDer,
    rsa::{
        KeyPair as RsaKeyPair, KeySize, OaepPrivateDecryptingKey, OaepPublicEncryptingKey,
        PrivateDecryptingKey,
    },
    signature::{
        self, EcdsaKeyPair, EcdsaSigningAlgorithm, EcdsaVerificationAlgorithm, KeyPair as _,
        UnparsedPublicKey,
    },
};
use coffer_crypto::{SecretBytes, SecretKey, wrap};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{EncryptionAlgorithm, KvError, Result, SignatureAlgorithm, b64url, pem};

/// Key type family (the `-HSM` variants live in a token, not here).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    /// RSA 2048, 3072 or 4096 bits.
    Rsa,
    /// ECDSA on a NIST curve.
    Ec,
}

impl KeyType {
    /// The JWK `kty`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rsa => "RSA",
            Self::Ec => "EC",
        }
    }
}

/// NIST curves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Curve {
    /// P-256.
    P256,
    /// P-384.
    P384,
    /// P-521.
    P521,
}

impl Curve {
    /// Parses `P-256`, `P-384`, `P-521`.
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_uppercase().as_str() {
            "P-256" => Ok(Self::P256),
            "P-384" => Ok(Self::P384),
            "P-521" => Ok(Self::P521),
            _ => Err(KvError::BadParameter(format!(
                "unsupported curve {s:?}: use P-256, P-384 or P-521"
            ))),
        }
    }

    /// The JWK `crv`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::P256 => "P-256",
            Self::P384 => "P-384",
            Self::P521 => "P-521",
        }
    }

    pub(crate) const ALL: [Curve; 3] = [Self::P256, Self::P384, Self::P521];

    /// Bytes of one coordinate (and of r and of s in a raw ECDSA signature).
    pub(crate) fn coordinate_len(self) -> usize {
        match self {
            Self::P256 => 32,
            Self::P384 => 48,
            Self::P521 => 66,
        }
    }

    fn signing(self) -> &'static EcdsaSigningAlgorithm {
        match self {
            Self::P256 => &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            Self::P384 => &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            Self::P521 => &signature::ECDSA_P521_SHA512_FIXED_SIGNING,
        }
    }

    fn verification(self) -> &'static EcdsaVerificationAlgorithm {
        match self {
            Self::P256 => &signature::ECDSA_P256_SHA256_FIXED,
            Self::P384 => &signature::ECDSA_P384_SHA384_FIXED,
            Self::P521 => &signature::ECDSA_P521_SHA512_FIXED,
        }
    }

    pub(crate) fn signature_alg(self) -> SignatureAlgorithm {
        match self {
            Self::P256 => SignatureAlgorithm::Es256,
            Self::P384 => SignatureAlgorithm::Es384,
            Self::P521 => SignatureAlgorithm::Es512,
        }
    }
}

/// The public half of a key as a JSON Web Key (Key Vault's `key` object; never any
/// private parameter).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsonWebKey {
    /// Versioned key identifier (filled in by the vault).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kid: String,
    /// `RSA`, `EC`, `RSA-HSM`, `EC-HSM`.
    pub kty: String,
    /// Permitted operations.
    #[serde(default)]
    pub key_ops: Vec<String>,
    /// RSA modulus (base64url).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA public exponent (base64url).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// EC curve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// EC x coordinate (base64url).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// EC y coordinate (base64url).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
}

/// A software key's private material: PKCS#8 DER, zeroized on drop, never
/// printed, serialised or returned unsealed. An RSA key is parsed for RSA-OAEP once,
/// on its first encrypt or decrypt, and the parsed key pair is kept with it (aws-lc
/// cleanses that memory when it is freed, with the PKCS#8).
pub struct PrivateKey(Arc<KeyInner>);

struct KeyInner {
    kty: KeyType,
    curve: Option<Curve>,
    pkcs8: SecretBytes,
    oaep: OnceLock<OaepKeys>,
}

/// An RSA key parsed for RSA-OAEP (both halves).
struct OaepKeys {
    decrypting: OaepPrivateDecryptingKey,
    encrypting: OaepPublicEncryptingKey,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateKey")
            .field("kty", &self.0.kty)
            .field("curve", &self.0.curve)
            .finish_non_exhaustive()
    }
}

/// Refuses an RSA-only operation (`op`) on a key of type `kty` (`EC`, `EC-HSM`).
pub(crate) fn need_rsa(kty: &str, op: &str) -> Result<()> {
    if kty.starts_with("RSA") {
        Ok(())
    } else {
        Err(KvError::BadParameter(format!(
            "operation {op} needs an RSA key; this key is {kty}"
        )))
    }
}

/// How long a key version unsealed by [`PrivateKey::open`] stays in this process's
/// memory to serve later opens of the same sealed bytes under the same master key
/// (RSA-OAEP parsing included): the bound on how long unsealed material outlives its
/// last use. Every data-plane call still authorises and checks the key's state first.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(300);
/// At most this many unsealed key versions are kept.
const KEY_CACHE_MAX: usize = 64;

struct CacheEntry {
    /// SHA-256 of (master key, purpose, sealed bytes): a hit is exactly what `open` was given.
    id: [u8; 32],
    key: PrivateKey,
    opened: Instant,
}

static KEY_CACHE: Mutex<Vec<CacheEntry>> = Mutex::new(Vec::new());

fn cache_id(master: &SecretKey, purpose: &str, sealed: &[u8]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"coffer-keyvault unsealed-key cache\0");
    ctx.update(master.expose());
    ctx.update(&(purpose.len() as u64).to_le_bytes());
    ctx.update(purpose.as_bytes());
    ctx.update(sealed);
    let mut id = [0u8; 32];
    id.copy_from_slice(ctx.finish().as_ref());
    id
}

/// The cached key of `id` if still fresh; drops (zeroizes) every expired entry.
fn cache_get(id: &[u8; 32]) -> Option<PrivateKey> {
    let mut c = KEY_CACHE.lock().unwrap_or_else(|p| p.into_inner());
    c.retain(|e| e.opened.elapsed() < KEY_CACHE_TTL);
    c.iter().find(|e| &e.id == id).map(|e| e.key.share())
}

fn cache_put(id: [u8; 32], key: &PrivateKey) {
    let mut c = KEY_CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if c.iter().any(|e| e.id == id) {
        return;
    }
    if c.len() >= KEY_CACHE_MAX {
        c.remove(0); // the oldest
    }
    c.push(CacheEntry {
        id,
        key: key.share(),
        opened: Instant::now(),
    });
}

fn crypto(what: &str) -> KvError {
    KvError::Crypto(what.to_owned())
}

impl PrivateKey {
    fn new(kty: KeyType, curve: Option<Curve>, pkcs8: SecretBytes) -> Self {
        Self(Arc::new(KeyInner {
            kty,
            curve,
            pkcs8,
            oaep: OnceLock::new(),
        }))
    }

    /// Another handle on the same material (for caches: the material is freed, and
    /// zeroized, when the last handle drops).
    pub fn share(&self) -> Self {
        Self(Arc::clone(&self.0))
    }

    /// Generates an RSA key of 2048, 3072 or 4096 bits.
    pub fn generate_rsa(bits: u32) -> Result<Self> {
        let size = match bits {
            2048 => KeySize::Rsa2048,
            3072 => KeySize::Rsa3072,
            4096 => KeySize::Rsa4096,
            _ => {
                return Err(KvError::BadParameter(format!(
                    "unsupported RSA key size {bits}: use 2048, 3072 or 4096"
                )));
            }
        };
        let kp = RsaKeyPair::generate(size).map_err(|_| crypto("RSA key generation failed"))?;
        Self::from_rsa(&kp)
    }

    /// Generates an EC key on `curve`.
    pub fn generate_ec(curve: Curve) -> Result<Self> {
        let kp = EcdsaKeyPair::generate(curve.signing())
            .map_err(|_| crypto("EC key generation failed"))?;
        Self::from_ec(curve, &kp)
    }

    /// Generated keys are 2048, 3072 or 4096 bits; imported ones may be any size from
    /// 2048 to 8192 bits that aws-lc-rs uses (customer-managed keys accept only the
    /// three standard sizes: `UserErrorCMKUnsupportedKeySize`).
    fn from_rsa(kp: &RsaKeyPair) -> Result<Self> {
        let bits = kp.public_modulus_len() * 8;
        if !(2048..=8192).contains(&bits) {
            return Err(KvError::BadParameter(format!(
                "unsupported RSA key size {bits}: RSA keys have 2048 to 8192 bits"
            )));
        }
        let der = kp.as_der().map_err(|_| crypto("RSA key encoding failed"))?;
        Ok(Self::new(
            KeyType::Rsa,
            None,
            SecretBytes::new(der.as_ref().to_vec()),
        ))
    }

    fn from_ec(curve: Curve, kp: &EcdsaKeyPair) -> Result<Self> {
        let doc = kp
            .to_pkcs8v1()
            .map_err(|_| crypto("EC key encoding failed"))?;
        Ok(Self::new(
            KeyType::Ec,
            Some(curve),
            SecretBytes::new(doc.as_ref().to_vec()),
        ))
    }

    /// Imports an unencrypted RSA or EC private key from PEM (`PRIVATE KEY`,
    /// `RSA PRIVATE KEY` or `EC PRIVATE KEY`).
    pub fn from_pem(text: &str) -> Result<Self> {
        let (label, der) = pem::decode(text)?;
        let unusable = || {
            KvError::BadParameter(
                "the PEM file does not hold a supported RSA (2048/3072/4096) or EC (P-256/P-384/P-521) private key"
                    .into(),
            )
        };
        match label.as_str() {
            "PRIVATE KEY" => {
                if let Ok(kp) = RsaKeyPair::from_pkcs8(&der) {
                    return Self::from_rsa(&kp);
                }
                for c in Curve::ALL {
                    if let Ok(kp) = EcdsaKeyPair::from_pkcs8(c.signing(), &der) {
                        return Self::from_ec(c, &kp);
                    }
                }
                Err(unusable())
            }
            "RSA PRIVATE KEY" => {
                Self::from_rsa(&RsaKeyPair::from_der(&der).map_err(|_| unusable())?)
            }
            "EC PRIVATE KEY" => {
                for c in Curve::ALL {
                    if let Ok(kp) = EcdsaKeyPair::from_private_key_der(c.signing(), &der) {
                        return Self::from_ec(c, &kp);
                    }
                }
                Err(unusable())
            }
            _ => Err(unusable()),
        }
    }

    /// Key type.
    pub fn kty(&self) -> KeyType {
        self.0.kty
    }

    /// Seals the PKCS#8 under the instance master key, bound to `purpose` (the key
    /// version's identity). Output is safe to store.
    pub fn seal(&self, master: &SecretKey, purpose: &str) -> Result<Vec<u8>> {
        let kind = match (self.0.kty, self.0.curve) {
            (KeyType::Rsa, _) => "RSA".to_owned(),
            (KeyType::Ec, Some(c)) => format!("EC:{}", c.as_str()),
            (KeyType::Ec, None) => return Err(crypto("EC key without a curve")),
        };
        let mut plain = Zeroizing::new(Vec::with_capacity(
            kind.len() + 1 + self.0.pkcs8.expose().len(),
        ));
        plain.extend_from_slice(kind.as_bytes());
        plain.push(0);
        plain.extend_from_slice(self.0.pkcs8.expose());
        wrap::seal_with_master(master, purpose, &plain)
            .map_err(|_| crypto("sealing the key failed"))
    }

    /// Opens what [`PrivateKey::seal`] produced for the same `purpose`. The same sealed
    /// bytes opened again under the same master key and purpose within
    /// [`KEY_CACHE_TTL`] of the first open are served from this process's memory.
    pub fn open(master: &SecretKey, purpose: &str, sealed: &[u8]) -> Result<Self> {
        let id = cache_id(master, purpose, sealed);
        if let Some(k) = cache_get(&id) {
            return Ok(k);
        }
        let k = Self::open_sealed(master, purpose, sealed)?;
        cache_put(id, &k);
        Ok(k)
    }

    fn open_sealed(master: &SecretKey, purpose: &str, sealed: &[u8]) -> Result<Self> {
        let plain = wrap::open_with_master(master, purpose, sealed)
            .map_err(|_| crypto("the sealed key material does not authenticate"))?;
        let p = plain.expose();
        let nul = p
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| crypto("malformed sealed key"))?;
        let kind = std::str::from_utf8(&p[..nul]).map_err(|_| crypto("malformed sealed key"))?;
        let (kty, curve) = match kind.split_once(':') {
            None if kind == "RSA" => (KeyType::Rsa, None),
            Some(("EC", c)) => (KeyType::Ec, Some(Curve::parse(c)?)),
            _ => return Err(crypto("malformed sealed key")),
        };
        Ok(Self::new(
            kty,
            curve,
            SecretBytes::new(p[nul + 1..].to_vec()),
        ))
    }

    fn rsa(&self) -> Result<RsaKeyPair> {
        RsaKeyPair::from_pkcs8(self.0.pkcs8.expose()).map_err(|_| crypto("malformed RSA key"))
    }

    fn ec(&self) -> Result<(Curve, EcdsaKeyPair)> {
        let c = self
            .0
            .curve
            .ok_or_else(|| crypto("EC key without a curve"))?;
        let kp = EcdsaKeyPair::from_pkcs8(c.signing(), self.0.pkcs8.expose())
            .map_err(|_| crypto("malformed EC key"))?;
        Ok((c, kp))
    }

    /// The public JWK (`kid` left empty, `key_ops` as given).
    pub fn public_jwk(&self, key_ops: &[String]) -> Result<JsonWebKey> {
        let mut jwk = JsonWebKey {
            kty: self.0.kty.as_str().to_owned(),
            key_ops: key_ops.to_vec(),
            ..JsonWebKey::default()
        };
        match self.0.kty {
            KeyType::Rsa => {
                let kp = self.rsa()?;
                let pk = kp.public_key();
                jwk.n = Some(b64url(pk.modulus().big_endian_without_leading_zero()));
                jwk.e = Some(b64url(pk.exponent().big_endian_without_leading_zero()));
            }
            KeyType::Ec => {
                let (c, kp) = self.ec()?;
                let point = kp.public_key().as_ref();
                let len = (point.len() - 1) / 2;
                jwk.crv = Some(c.as_str().to_owned());
                jwk.x = Some(b64url(&point[1..1 + len]));
                jwk.y = Some(b64url(&point[1 + len..]));
            }
        }
        Ok(jwk)
    }

    /// The public key as PEM (`PUBLIC KEY`, X.509 SubjectPublicKeyInfo).
    pub fn public_pem(&self) -> Result<String> {
        let der = match self.0.kty {
            KeyType::Rsa => self
                .rsa()?
                .public_key()
                .as_der()
                .map_err(|_| crypto("public key encoding failed"))?
                .as_ref()
                .to_vec(),
            KeyType::Ec => self
                .ec()?
                .1
                .public_key()
                .as_der()
                .map_err(|_| crypto("public key encoding failed"))?
                .as_ref()
                .to_vec(),
        };
        Ok(pem::encode("PUBLIC KEY", &der))
    }

    fn need_rsa(&self, op: &str) -> Result<()> {
        need_rsa(self.0.kty.as_str(), op)
    }

    /// The key parsed for RSA-OAEP, made on first use.
    fn oaep(&self, op: &str) -> Result<&OaepKeys> {
        self.need_rsa(op)?;
        if let Some(k) = self.0.oaep.get() {
            return Ok(k);
        }
        let sk = PrivateDecryptingKey::from_pkcs8(self.0.pkcs8.expose())
            .map_err(|_| crypto("malformed RSA key"))?;
        let encrypting = OaepPublicEncryptingKey::new(sk.public_key())
            .map_err(|_| crypto("unusable RSA key"))?;
        let decrypting =
            OaepPrivateDecryptingKey::new(sk).map_err(|_| crypto("unusable RSA key"))?;
        Ok(self.0.oaep.get_or_init(|| OaepKeys {
            decrypting,
            encrypting,
        }))
    }

    /// RSA-OAEP encryption with the public key (wrapKey / encrypt).
    pub fn encrypt(&self, alg: EncryptionAlgorithm, plaintext: &[u8]) -> Result<Vec<u8>> {
        let enc = &self.oaep("encrypt")?.encrypting;
        let max = enc.max_plaintext_size(alg.oaep());
        if plaintext.len() > max {
            return Err(KvError::BadParameter(format!(
                "the value is {} bytes; {} with this key takes at most {max}",
                plaintext.len(),
                alg.as_str()
            )));
        }
        let mut out = vec![0u8; enc.ciphertext_size()];
        let n = enc
            .encrypt(alg.oaep(), plaintext, &mut out, None)
            .map_err(|_| crypto("RSA-OAEP encryption failed"))?
            .len();
        out.truncate(n);
        Ok(out)
    }

    /// RSA-OAEP decryption (unwrapKey / decrypt), constant-time in aws-lc.
    pub fn decrypt(&self, alg: EncryptionAlgorithm, ciphertext: &[u8]) -> Result<SecretBytes> {
        let dec = &self.oaep("decrypt")?.decrypting;
        let mut out = Zeroizing::new(vec![0u8; dec.min_output_size()]);
        let n = dec
            .decrypt(alg.oaep(), ciphertext, &mut out, None)
            .map_err(|_| {
                KvError::Crypto(format!(
                    "the value cannot be decrypted with this key version and {}",
                    alg.as_str()
                ))
            })?
            .len();
        Ok(SecretBytes::new(out[..n].to_vec()))
    }

    pub(crate) fn digest(alg: SignatureAlgorithm, digest: &[u8]) -> Result<Digest> {
        alg.check_digest(digest)?;
        Digest::import_less_safe(digest, alg.digest()).map_err(|_| crypto("unusable digest"))
    }

    pub(crate) fn rsa_params(
        alg: SignatureAlgorithm,
    ) -> Option<(
        &'static signature::RsaSignatureEncoding,
        &'static signature::RsaParameters,
    )> {
        use SignatureAlgorithm::*;
        Some(match alg {
            Rs256 => (
                &signature::RSA_PKCS1_SHA256,
                &signature::RSA_PKCS1_2048_8192_SHA256,
            ),
            Rs384 => (
                &signature::RSA_PKCS1_SHA384,
                &signature::RSA_PKCS1_2048_8192_SHA384,
            ),
            Rs512 => (
                &signature::RSA_PKCS1_SHA512,
                &signature::RSA_PKCS1_2048_8192_SHA512,
            ),
            Ps256 => (
                &signature::RSA_PSS_SHA256,
                &signature::RSA_PSS_2048_8192_SHA256,
            ),
            Ps384 => (
                &signature::RSA_PSS_SHA384,
                &signature::RSA_PSS_2048_8192_SHA384,
            ),
            Ps512 => (
                &signature::RSA_PSS_SHA512,
                &signature::RSA_PSS_2048_8192_SHA512,
            ),
            Es256 | Es384 | Es512 => return None,
        })
    }

    fn check_sig_alg(&self, alg: SignatureAlgorithm) -> Result<()> {
        let ok = match self.0.kty {
            KeyType::Rsa => Self::rsa_params(alg).is_some(),
            KeyType::Ec => self.0.curve.map(Curve::signature_alg) == Some(alg),
        };
        if ok {
            Ok(())
        } else {
            Err(KvError::BadParameter(format!(
                "algorithm {} does not fit this {} key{}",
                alg.as_str(),
                self.0.kty.as_str(),
                self.0
                    .curve
                    .map(|c| format!(" ({})", c.as_str()))
                    .unwrap_or_default()
            )))
        }
    }

    /// Signs a precomputed digest (Key Vault `sign`). ECDSA signatures are raw r‖s.
    pub fn sign(&self, alg: SignatureAlgorithm, digest: &[u8]) -> Result<Vec<u8>> {
        self.check_sig_alg(alg)?;
        let d = Self::digest(alg, digest)?;
        match self.0.kty {
            KeyType::Rsa => {
                let (enc, _) = Self::rsa_params(alg).ok_or_else(|| crypto("no RSA params"))?;
                let kp = self.rsa()?;
                let mut sig = vec![0u8; kp.public_modulus_len()];
                kp.sign_digest(enc, &d, &mut sig)
                    .map_err(|_| crypto("RSA signing failed"))?;
                Ok(sig)
            }
            KeyType::Ec => {
                let (_, kp) = self.ec()?;
                let sig = kp
                    .sign_digest(&d)
                    .map_err(|_| crypto("ECDSA signing failed"))?;
                Ok(sig.as_ref().to_vec())
            }
        }
    }

    /// Verifies a signature over a digest (Key Vault `verify`).
    pub fn verify(&self, alg: SignatureAlgorithm, digest: &[u8], sig: &[u8]) -> Result<bool> {
        self.check_sig_alg(alg)?;
        match self.0.kty {
            KeyType::Rsa => rsa_verify_digest(self.rsa()?.public_key().as_ref(), alg, digest, sig),
            KeyType::Ec => {
                let d = Self::digest(alg, digest)?;
                let (c, kp) = self.ec()?;
                Ok(
                    UnparsedPublicKey::new(c.verification(), kp.public_key().as_ref())
                        .verify_digest(&d, sig)
                        .is_ok(),
                )
            }
        }
    }
}

/// Verifies an RS256/384/512 or PS256/384/512 signature over a digest with an RSA
/// public key (`RSAPublicKey` or SubjectPublicKeyInfo DER); other algorithms are
/// refused. PSS salts are the digest's length.
pub(crate) fn rsa_verify_digest(
    public_der: &[u8],
    alg: SignatureAlgorithm,
    digest: &[u8],
    sig: &[u8],
) -> Result<bool> {
    let (_, params) = PrivateKey::rsa_params(alg).ok_or_else(|| {
        KvError::BadParameter(format!(
            "algorithm {} does not fit an RSA key: use RS256/384/512 or PS256/384/512",
            alg.as_str()
        ))
    })?;
    let d = PrivateKey::digest(alg, digest)?;
    Ok(UnparsedPublicKey::new(params, public_der)
        .verify_digest(&d, sig)
        .is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopening_the_same_sealed_key_reuses_it_only_under_the_same_master_and_purpose() {
        let k = PrivateKey::generate_rsa(2048).unwrap();
        let master = SecretKey::from_bytes([7; 32]);
        let sealed = k.seal(&master, "kv:cache").unwrap();
        let a = PrivateKey::open(&master, "kv:cache", &sealed).unwrap();
        let c = a.encrypt(EncryptionAlgorithm::RsaOaep256, b"dek").unwrap();
        let b = PrivateKey::open(&master, "kv:cache", &sealed).unwrap();
        assert!(Arc::ptr_eq(&a.0, &b.0), "served from the cache");
        assert!(b.0.oaep.get().is_some(), "parsed once");
        assert_eq!(
            b.decrypt(EncryptionAlgorithm::RsaOaep256, &c)
                .unwrap()
                .expose(),
            b"dek"
        );
        // Another master key or purpose never hits the cache: the open must authenticate.
        assert!(PrivateKey::open(&SecretKey::from_bytes([8; 32]), "kv:cache", &sealed).is_err());
        assert!(PrivateKey::open(&master, "kv:other", &sealed).is_err());
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(PrivateKey::open(&master, "kv:cache", &tampered).is_err());
    }

    #[test]
    fn rsa_round_trips_and_seals() {
        let k = PrivateKey::generate_rsa(2048).unwrap();
        let master = SecretKey::from_bytes([3; 32]);
        let sealed = k.seal(&master, "kv:a").unwrap();
        assert!(PrivateKey::open(&master, "kv:b", &sealed).is_err());
        let k = PrivateKey::open(&master, "kv:a", &sealed).unwrap();
        for alg in [
            EncryptionAlgorithm::RsaOaep256,
            EncryptionAlgorithm::RsaOaep,
        ] {
            let c = k.encrypt(alg, b"0123456789abcdef0123456789abcdef").unwrap();
            assert_eq!(c.len(), 256);
            assert_eq!(
                k.decrypt(alg, &c).unwrap().expose(),
                b"0123456789abcdef0123456789abcdef"
            );
        }
        let c = k.encrypt(EncryptionAlgorithm::RsaOaep256, b"x").unwrap();
        assert!(k.decrypt(EncryptionAlgorithm::RsaOaep, &c).is_err());
        assert!(EncryptionAlgorithm::parse("RSA1_5").is_err());
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b"msg");
        for alg in [SignatureAlgorithm::Rs256, SignatureAlgorithm::Ps256] {
            let s = k.sign(alg, d.as_ref()).unwrap();
            assert!(k.verify(alg, d.as_ref(), &s).unwrap());
            assert!(!k.verify(alg, &[0; 32], &s).unwrap());
        }
        let jwk = k.public_jwk(&[]).unwrap();
        assert_eq!(jwk.e.as_deref(), Some("AQAB"));
        assert!(
            k.public_pem()
                .unwrap()
                .starts_with("-----BEGIN PUBLIC KEY-----")
        );
        assert!(!format!("{k:?}").contains("pkcs8"));
    }

    #[test]
    fn ec_sign_verify() {
        for c in Curve::ALL {
            let k = PrivateKey::generate_ec(c).unwrap();
            let alg = c.signature_alg();
            let d = vec![7u8; alg.digest().output_len()];
            let s = k.sign(alg, &d).unwrap();
            assert!(k.verify(alg, &d, &s).unwrap());
            assert!(k.encrypt(EncryptionAlgorithm::RsaOaep256, b"x").is_err());
            let jwk = k.public_jwk(&[]).unwrap();
            assert_eq!(jwk.crv.as_deref(), Some(c.as_str()));
        }
    }
}
