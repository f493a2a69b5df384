//! Hardware-protected keys through PKCS#11 (`cryptoki`): RSA and EC (P-256, P-384,
//! P-521) keys generated inside a token as sensitive, non-extractable private
//! objects and used there.
//!
//! A token is named by module path, token label and a PIN file (the PIN is read
//! from the file, kept in a zeroizing `AuthPin`, never printed). Each key version is a
//! key pair whose `CKA_ID` is the 16 bytes of its version. RSA public-key operations
//! (wrapKey, encrypt) run in software on the public JWK; private operations
//! (unwrapKey, decrypt) run in the token. EC keys sign and verify in the token with
//! `CKM_ECDSA` over the caller's digest; signatures are JWS raw `r‖s` (each half
//! the curve's coordinate length), the form software EC keys use, so either
//! verifies the other's. The public key comes from `CKA_EC_POINT` and the curve.
//! RSA keys sign digests in the token: RS256/384/512 with `CKM_RSA_PKCS` over the
//! digest's `DigestInfo`, PS256/384/512 with `CKM_RSA_PKCS_PSS` (MGF1 with the same
//! hash, salt the digest's length); RSA signatures are verified with the public key.
//!
//! SoftHSM2 2.6.1 refuses OAEP with SHA-256 (`CKR_ARGUMENTS_BAD`); [`Hsm::open`]
//! probes the token (it generates and destroys a throw-away key pair) and
//! [`Hsm::supports_oaep_sha256`] reports it, so callers can fall back to `RSA-OAEP`
//! (SHA-1) and record the algorithm they used. Callers that recorded the answer
//! reopen the token with [`Hsm::open_probed`], which skips the probe.

use std::path::{Path, PathBuf};

use aws_lc_rs::{
    encoding::AsDer,
    rsa::{OaepPublicEncryptingKey, PublicEncryptingKey, PublicKeyComponents},
};
use coffer_crypto::SecretBytes;
use cryptoki::{
    context::{CInitializeArgs, CInitializeFlags, Pkcs11},
    error::RvError,
    mechanism::{
        Mechanism, MechanismType,
        rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource, PkcsPssParams},
    },
    object::{Attribute, AttributeType, ObjectClass, ObjectHandle},
    session::{Session, UserType},
    slot::Slot,
    types::AuthPin,
};

use crate::{
    Curve, EncryptionAlgorithm, JsonWebKey, KvError, Result, SignatureAlgorithm, b64url,
    from_b64url,
    key::{need_rsa, rsa_verify_digest},
    pem,
};

/// Where a managed HSM's token is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HsmConfig {
    /// PKCS#11 module (e.g. `/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    /// Token label.
    pub token_label: String,
    /// File holding the user PIN (first line).
    pub pin_file: PathBuf,
}

/// An open, logged-in token.
pub struct Hsm {
    _ctx: Pkcs11,
    session: Session,
    oaep_sha256: bool,
}

impl std::fmt::Debug for Hsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hsm")
            .field("oaep_sha256", &self.oaep_sha256)
            .finish_non_exhaustive()
    }
}

fn hsm_err(what: &str, e: impl std::fmt::Display) -> KvError {
    KvError::Hsm(format!("{what}: {e}"))
}

fn oaep(alg: EncryptionAlgorithm) -> Mechanism<'static> {
    let (h, m) = match alg {
        EncryptionAlgorithm::RsaOaep => (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
        EncryptionAlgorithm::RsaOaep256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
    };
    Mechanism::RsaPkcsOaep(PkcsOaepParams::new(h, m, PkcsOaepSource::empty()))
}

fn read_pin(path: &Path) -> Result<AuthPin> {
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
        KvError::BadParameter(format!("cannot read the PIN file {}: {e}", path.display()))
    })?);
    let pin = text.lines().next().unwrap_or_default().trim();
    if pin.is_empty() {
        return Err(KvError::BadParameter(format!(
            "the PIN file {} is empty",
            path.display()
        )));
    }
    Ok(AuthPin::new(pin.into()))
}

impl Hsm {
    /// Loads the module, finds the token by label, logs in, and probes RSA-OAEP-256.
    pub fn open(cfg: &HsmConfig) -> Result<Self> {
        let mut hsm = Self::login(cfg)?;
        hsm.oaep_sha256 = hsm.probe_oaep_sha256();
        Ok(hsm)
    }

    /// Like [`Hsm::open`], with the answer of an earlier probe (`oaep_sha256`)
    /// instead of a new one: no key pair is generated.
    pub fn open_probed(cfg: &HsmConfig, oaep_sha256: bool) -> Result<Self> {
        let mut hsm = Self::login(cfg)?;
        hsm.oaep_sha256 = oaep_sha256;
        Ok(hsm)
    }

    /// Loads the module, finds the token by label and logs in.
    fn login(cfg: &HsmConfig) -> Result<Self> {
        let ctx = Pkcs11::new(&cfg.module).map_err(|e| {
            hsm_err(
                &format!("cannot load the PKCS#11 module {}", cfg.module.display()),
                e,
            )
        })?;
        ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .map_err(|e| hsm_err("cannot initialise the PKCS#11 module", e))?;
        let slot = Self::find_slot(&ctx, &cfg.token_label)?;
        let session = ctx
            .open_rw_session(slot)
            .map_err(|e| hsm_err("cannot open a token session", e))?;
        let pin = read_pin(&cfg.pin_file)?;
        session
            .login(UserType::User, Some(&pin))
            .map_err(|e| hsm_err("cannot log in to the token (wrong PIN?)", e))?;
        Ok(Self {
            _ctx: ctx,
            session,
            oaep_sha256: false,
        })
    }

    fn find_slot(ctx: &Pkcs11, label: &str) -> Result<Slot> {
        for slot in ctx
            .get_slots_with_token()
            .map_err(|e| hsm_err("cannot list token slots", e))?
        {
            if let Ok(info) = ctx.get_token_info(slot)
                && info.label().trim() == label
            {
                return Ok(slot);
            }
        }
        Err(KvError::BadParameter(format!(
            "no PKCS#11 token labelled {label:?} was found"
        )))
    }

    /// Whether the token decrypts RSA-OAEP with SHA-256 / MGF1-SHA-256.
    pub fn supports_oaep_sha256(&self) -> bool {
        self.oaep_sha256
    }

    fn probe_oaep_sha256(&self) -> bool {
        let probe = || -> Result<bool> {
            let (public, private) = self.generate_pair(2048, b"coffer-probe", false)?;
            let jwk = self.public_jwk(public)?;
            let c = public_encrypt(&jwk, EncryptionAlgorithm::RsaOaep256, b"probe")?;
            let ok = self
                .session
                .decrypt(&oaep(EncryptionAlgorithm::RsaOaep256), private, &c)
                .is_ok_and(|p| p == b"probe");
            let _ = self.session.destroy_object(private);
            let _ = self.session.destroy_object(public);
            Ok(ok)
        };
        probe().unwrap_or(false)
    }

    fn generate_pair(
        &self,
        bits: u32,
        id: &[u8],
        token: bool,
    ) -> Result<(ObjectHandle, ObjectHandle)> {
        let public = [
            Attribute::Token(token),
            Attribute::Private(false),
            Attribute::Encrypt(true),
            Attribute::Verify(true),
            Attribute::Wrap(true),
            Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
            Attribute::ModulusBits(u64::from(bits).into()),
            Attribute::Id(id.to_vec()),
        ];
        let private = [
            Attribute::Token(token),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Decrypt(true),
            Attribute::Sign(true),
            Attribute::Unwrap(true),
            Attribute::Id(id.to_vec()),
        ];
        self.session
            .generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)
            .map_err(|e| hsm_err("the token could not generate an RSA key", e))
    }

    fn public_jwk(&self, public: ObjectHandle) -> Result<JsonWebKey> {
        let attrs = self
            .session
            .get_attributes(
                public,
                &[AttributeType::Modulus, AttributeType::PublicExponent],
            )
            .map_err(|e| hsm_err("cannot read the public key", e))?;
        let mut jwk = JsonWebKey {
            kty: "RSA-HSM".into(),
            ..JsonWebKey::default()
        };
        for a in attrs {
            match a {
                Attribute::Modulus(n) => jwk.n = Some(b64url(strip(&n))),
                Attribute::PublicExponent(e) => jwk.e = Some(b64url(strip(&e))),
                _ => {}
            }
        }
        Ok(jwk)
    }

    /// Generates an RSA key pair in the token (persistent, sensitive,
    /// non-extractable) under `CKA_ID = id`; returns its public JWK.
    pub fn generate_rsa(&self, bits: u32, id: &[u8]) -> Result<JsonWebKey> {
        if ![2048, 3072, 4096].contains(&bits) {
            return Err(KvError::BadParameter(format!(
                "unsupported RSA key size {bits}: use 2048, 3072 or 4096"
            )));
        }
        let (public, _) = self.generate_pair(bits, id, true)?;
        self.public_jwk(public)
    }

    /// Generates an EC key pair on `curve` in the token (persistent, sensitive,
    /// non-extractable, sign/verify only) under `CKA_ID = id`; returns its public JWK.
    pub fn generate_ec(&self, curve: Curve, id: &[u8]) -> Result<JsonWebKey> {
        let public = [
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::EcParams(ec_der(curve).params.to_vec()),
            Attribute::Id(id.to_vec()),
        ];
        let private = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Id(id.to_vec()),
        ];
        let (public, _) = self
            .session
            .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
            .map_err(|e| hsm_err("the token could not generate an EC key", e))?;
        let attrs = self
            .session
            .get_attributes(public, &[AttributeType::EcPoint])
            .map_err(|e| hsm_err("cannot read the public key", e))?;
        let Some(Attribute::EcPoint(der)) = attrs.into_iter().next() else {
            return Err(KvError::Hsm("the token returned no CKA_EC_POINT".into()));
        };
        let point = ec_point(curve, &der)?;
        let n = curve.coordinate_len();
        Ok(JsonWebKey {
            kty: "EC-HSM".into(),
            crv: Some(curve.as_str().to_owned()),
            x: Some(b64url(&point[1..1 + n])),
            y: Some(b64url(&point[1 + n..])),
            ..JsonWebKey::default()
        })
    }

    /// ECDSA signature of a precomputed digest inside the token (`CKM_ECDSA`), as
    /// JWS raw `r‖s`.
    pub fn sign_ec(
        &self,
        id: &[u8],
        curve: Curve,
        alg: SignatureAlgorithm,
        digest: &[u8],
    ) -> Result<Vec<u8>> {
        check_ec_alg(curve, alg, digest)?;
        let key = self.find(id, ObjectClass::PRIVATE_KEY)?;
        let sig = self
            .session
            .sign(&Mechanism::Ecdsa, key, digest)
            .map_err(|e| hsm_err("the token could not sign", e))?;
        raw_signature(&sig, curve.coordinate_len())
    }

    /// Verifies a raw `r‖s` ECDSA signature over a digest inside the token.
    pub fn verify_ec(
        &self,
        id: &[u8],
        curve: Curve,
        alg: SignatureAlgorithm,
        digest: &[u8],
        sig: &[u8],
    ) -> Result<bool> {
        check_ec_alg(curve, alg, digest)?;
        if sig.len() != 2 * curve.coordinate_len() {
            return Ok(false);
        }
        let key = self.find(id, ObjectClass::PUBLIC_KEY)?;
        match self.session.verify(&Mechanism::Ecdsa, key, digest, sig) {
            Ok(()) => Ok(true),
            Err(cryptoki::error::Error::Pkcs11(
                RvError::SignatureInvalid | RvError::SignatureLenRange,
                _,
            )) => Ok(false),
            Err(e) => Err(hsm_err("the token could not verify", e)),
        }
    }

    /// RSA signature of a precomputed digest inside the token: RS256/384/512
    /// (`CKM_RSA_PKCS` over the `DigestInfo`) or PS256/384/512 (`CKM_RSA_PKCS_PSS`,
    /// MGF1 with the digest's hash, salt the digest's length). A token without the
    /// mechanism gives `BadParameter`.
    pub fn sign_rsa(&self, id: &[u8], alg: SignatureAlgorithm, digest: &[u8]) -> Result<Vec<u8>> {
        alg.check_digest(digest)?;
        let (mechanism, input, name) = rsa_signature_mechanism(alg, digest)?;
        let key = self.find(id, ObjectClass::PRIVATE_KEY)?;
        self.session
            .sign(&mechanism, key, &input)
            .map_err(|e| match e {
                cryptoki::error::Error::Pkcs11(
                    RvError::MechanismInvalid | RvError::MechanismParamInvalid,
                    _,
                ) => KvError::BadParameter(format!(
                    "this PKCS#11 token does not support {} signatures ({name})",
                    alg.as_str()
                )),
                e => hsm_err("the token could not sign", e),
            })
    }

    fn find(&self, id: &[u8], class: ObjectClass) -> Result<ObjectHandle> {
        self.session
            .find_objects(&[Attribute::Class(class), Attribute::Id(id.to_vec())])
            .map_err(|e| hsm_err("cannot search the token", e))?
            .into_iter()
            .next()
            .ok_or_else(|| KvError::Hsm("the key's object is missing from the token".into()))
    }

    /// RSA-OAEP decryption inside the token.
    pub fn decrypt(
        &self,
        id: &[u8],
        alg: EncryptionAlgorithm,
        ciphertext: &[u8],
    ) -> Result<SecretBytes> {
        if alg == EncryptionAlgorithm::RsaOaep256 && !self.oaep_sha256 {
            return Err(KvError::BadParameter(
                "this PKCS#11 token does not support RSA-OAEP-256 (SHA-256); values for its keys are wrapped with RSA-OAEP (SHA-1)"
                    .into(),
            ));
        }
        let key = self.find(id, ObjectClass::PRIVATE_KEY)?;
        self.session
            .decrypt(&oaep(alg), key, ciphertext)
            .map(SecretBytes::new)
            .map_err(|_| {
                KvError::Crypto(format!(
                    "the value cannot be decrypted with this key version and {}",
                    alg.as_str()
                ))
            })
    }

    /// Destroys both objects of a key version.
    pub fn destroy(&self, id: &[u8]) -> Result<()> {
        for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
            if let Ok(h) = self.find(id, class) {
                self.session
                    .destroy_object(h)
                    .map_err(|e| hsm_err("cannot destroy a token object", e))?;
            }
        }
        Ok(())
    }
}

fn strip(b: &[u8]) -> &[u8] {
    let i = b
        .iter()
        .position(|x| *x != 0)
        .unwrap_or(b.len().saturating_sub(1));
    &b[i..]
}

fn public_key(jwk: &JsonWebKey) -> Result<PublicEncryptingKey> {
    let n = from_b64url(jwk.n.as_deref().unwrap_or_default())?;
    let e = from_b64url(jwk.e.as_deref().unwrap_or_default())?;
    PublicKeyComponents {
        n: n.as_slice(),
        e: e.as_slice(),
    }
    .try_into()
    .map_err(|_| KvError::Crypto("unusable RSA public key".into()))
}

/// Refuses an RSA-only operation (`op`: encrypt, decrypt) on an EC token key.
pub fn need_rsa_key(jwk: &JsonWebKey, op: &str) -> Result<()> {
    need_rsa(&jwk.kty, op)
}

/// RSA-OAEP encryption with a public JWK (software; public data only).
pub fn public_encrypt(
    jwk: &JsonWebKey,
    alg: EncryptionAlgorithm,
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    need_rsa(&jwk.kty, "encrypt")?;
    let enc = OaepPublicEncryptingKey::new(public_key(jwk)?)
        .map_err(|_| KvError::Crypto("unusable RSA key".into()))?;
    if plaintext.len() > enc.max_plaintext_size(alg.oaep()) {
        return Err(KvError::BadParameter(format!(
            "the value is too long for {} with this key",
            alg.as_str()
        )));
    }
    let mut out = vec![0u8; enc.ciphertext_size()];
    let n = enc
        .encrypt(alg.oaep(), plaintext, &mut out, None)
        .map_err(|_| KvError::Crypto("RSA-OAEP encryption failed".into()))?
        .len();
    out.truncate(n);
    Ok(out)
}

/// `DigestInfo` DER prefixes (RFC 8017 §9.2, note 1) of SHA-256, SHA-384, SHA-512.
const DIGEST_INFO_SHA256: &[u8] = &[
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];
const DIGEST_INFO_SHA384: &[u8] = &[
    0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05,
    0x00, 0x04, 0x30,
];
const DIGEST_INFO_SHA512: &[u8] = &[
    0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05,
    0x00, 0x04, 0x40,
];

/// The token mechanism, its input and its name for an RSA signature of `digest`.
fn rsa_signature_mechanism(
    alg: SignatureAlgorithm,
    digest: &[u8],
) -> Result<(Mechanism<'static>, Vec<u8>, &'static str)> {
    use SignatureAlgorithm::*;
    let pss = |hash_alg, mgf| {
        Mechanism::RsaPkcsPss(PkcsPssParams {
            hash_alg,
            mgf,
            s_len: (digest.len() as u64).into(),
        })
    };
    let (mechanism, prefix, name): (_, &[u8], _) = match alg {
        Rs256 => (Mechanism::RsaPkcs, DIGEST_INFO_SHA256, "CKM_RSA_PKCS"),
        Rs384 => (Mechanism::RsaPkcs, DIGEST_INFO_SHA384, "CKM_RSA_PKCS"),
        Rs512 => (Mechanism::RsaPkcs, DIGEST_INFO_SHA512, "CKM_RSA_PKCS"),
        Ps256 => (
            pss(MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
            &[],
            "CKM_RSA_PKCS_PSS",
        ),
        Ps384 => (
            pss(MechanismType::SHA384, PkcsMgfType::MGF1_SHA384),
            &[],
            "CKM_RSA_PKCS_PSS",
        ),
        Ps512 => (
            pss(MechanismType::SHA512, PkcsMgfType::MGF1_SHA512),
            &[],
            "CKM_RSA_PKCS_PSS",
        ),
        Es256 | Es384 | Es512 => {
            return Err(KvError::BadParameter(format!(
                "algorithm {} does not fit an RSA key: use RS256/384/512 or PS256/384/512",
                alg.as_str()
            )));
        }
    };
    Ok((mechanism, [prefix, digest].concat(), name))
}

/// Verifies an RS*/PS* signature over a digest with a public RSA JWK (software;
/// public data only).
pub fn public_verify(
    jwk: &JsonWebKey,
    alg: SignatureAlgorithm,
    digest: &[u8],
    sig: &[u8],
) -> Result<bool> {
    need_rsa(&jwk.kty, "verify")?;
    let der = public_key(jwk)?
        .as_der()
        .map_err(|_| KvError::Crypto("public key encoding failed".into()))?;
    rsa_verify_digest(der.as_ref(), alg, digest, sig)
}

/// PEM (`PUBLIC KEY`, X.509 SubjectPublicKeyInfo) of a public RSA or EC JWK.
pub fn public_pem(jwk: &JsonWebKey) -> Result<String> {
    if let Some(crv) = &jwk.crv {
        let curve = Curve::parse(crv)?;
        let x = from_b64url(jwk.x.as_deref().unwrap_or_default())?;
        let y = from_b64url(jwk.y.as_deref().unwrap_or_default())?;
        let n = curve.coordinate_len();
        if x.len() != n || y.len() != n {
            return Err(KvError::Crypto("malformed EC public key".into()));
        }
        let mut der = ec_der(curve).spki_prefix.to_vec();
        der.push(0x04);
        der.extend_from_slice(&x);
        der.extend_from_slice(&y);
        return Ok(pem::encode("PUBLIC KEY", &der));
    }
    let der = public_key(jwk)?
        .as_der()
        .map_err(|_| KvError::Crypto("public key encoding failed".into()))?;
    Ok(pem::encode("PUBLIC KEY", der.as_ref()))
}

/// The curve of an EC token key's JWK.
pub fn jwk_curve(jwk: &JsonWebKey) -> Result<Curve> {
    Curve::parse(jwk.crv.as_deref().unwrap_or_default())
}

/// DER pieces of a named curve.
struct EcDer {
    /// `CKA_EC_PARAMS`: the curve's OBJECT IDENTIFIER.
    params: &'static [u8],
    /// SubjectPublicKeyInfo up to the uncompressed point (`04‖x‖y`): SEQUENCE {
    /// SEQUENCE { id-ecPublicKey, curve }, BIT STRING header and its 0 unused bits }.
    spki_prefix: &'static [u8],
}

fn ec_der(curve: Curve) -> EcDer {
    match curve {
        // prime256v1 1.2.840.10045.3.1.7
        Curve::P256 => EcDer {
            params: &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
            spki_prefix: &[
                0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
                0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
            ],
        },
        // secp384r1 1.3.132.0.34
        Curve::P384 => EcDer {
            params: &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22],
            spki_prefix: &[
                0x30, 0x76, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
                0x05, 0x2b, 0x81, 0x04, 0x00, 0x22, 0x03, 0x62, 0x00,
            ],
        },
        // secp521r1 1.3.132.0.35
        Curve::P521 => EcDer {
            params: &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23],
            spki_prefix: &[
                0x30, 0x81, 0x9b, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
                0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23, 0x03, 0x81, 0x86, 0x00,
            ],
        },
    }
}

/// A DER length at `b[0..]`: (length, bytes it took).
fn der_len(b: &[u8]) -> Option<(usize, usize)> {
    match *b.first()? {
        l @ 0..=0x7f => Some((usize::from(l), 1)),
        0x81 => Some((usize::from(*b.get(1)?), 2)),
        0x82 => Some((usize::from(*b.get(1)?) << 8 | usize::from(*b.get(2)?), 3)),
        _ => None,
    }
}

/// The uncompressed point (`04‖x‖y`) of a `CKA_EC_POINT` value: a DER OCTET STRING
/// (PKCS#11), or the bare point some tokens return.
fn ec_point(curve: Curve, v: &[u8]) -> Result<Vec<u8>> {
    let want = 1 + 2 * curve.coordinate_len();
    let bad = || KvError::Hsm("the token returned a malformed CKA_EC_POINT".into());
    let point = if v.len() == want && v[0] == 0x04 {
        v
    } else if v.first() == Some(&0x04) {
        let (len, used) = der_len(&v[1..]).ok_or_else(bad)?;
        v.get(1 + used..1 + used + len).ok_or_else(bad)?
    } else {
        return Err(bad());
    };
    if point.len() != want || point[0] != 0x04 {
        return Err(bad());
    }
    Ok(point.to_vec())
}

/// Refuses an algorithm or digest that does not fit the curve.
fn check_ec_alg(curve: Curve, alg: SignatureAlgorithm, digest: &[u8]) -> Result<()> {
    if curve.signature_alg() != alg {
        return Err(KvError::BadParameter(format!(
            "algorithm {} does not fit this EC-HSM key ({}): use {}",
            alg.as_str(),
            curve.as_str(),
            curve.signature_alg().as_str()
        )));
    }
    alg.check_digest(digest)
}

/// A big-endian integer left-padded (or stripped of leading zeros) to `n` bytes.
fn fixed(int: &[u8], n: usize) -> Option<Vec<u8>> {
    let int = strip(int);
    (int.len() <= n).then(|| {
        let mut out = vec![0u8; n - int.len()];
        out.extend_from_slice(int);
        out
    })
}

/// A token's ECDSA signature as JWS raw `r‖s` (`n` bytes each). PKCS#11 specifies
/// `r‖s` already; a shorter even-length value is padded per half, and a DER
/// `ECDSA-Sig-Value` (SEQUENCE of two INTEGERs), which some tokens return, is
/// converted.
fn raw_signature(sig: &[u8], n: usize) -> Result<Vec<u8>> {
    let bad = || KvError::Hsm("the token returned a malformed ECDSA signature".into());
    if sig.len() == 2 * n {
        return Ok(sig.to_vec());
    }
    let (r, s) = if sig.first() == Some(&0x30) && sig.len() > 2 * n {
        let (_, used) = der_len(&sig[1..]).ok_or_else(bad)?;
        let mut rest = &sig[1 + used..];
        let mut int = || -> Result<&[u8]> {
            if rest.first() != Some(&0x02) {
                return Err(bad());
            }
            let (len, used) = der_len(&rest[1..]).ok_or_else(bad)?;
            let v = rest.get(1 + used..1 + used + len).ok_or_else(bad)?;
            rest = &rest[1 + used + len..];
            Ok(v)
        };
        (int()?, int()?)
    } else if sig.len().is_multiple_of(2) {
        sig.split_at(sig.len() / 2)
    } else {
        return Err(bad());
    };
    let mut out = fixed(r, n).ok_or_else(bad)?;
    out.extend(fixed(s, n).ok_or_else(bad)?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecdsa_signatures_become_raw_r_s() {
        let raw: Vec<u8> = (1..=64).collect();
        assert_eq!(raw_signature(&raw, 32).unwrap(), raw);
        // Halves shorter than the coordinate are left-padded.
        let short = [[0x7fu8; 31].as_slice(), [0x01u8; 31].as_slice()].concat();
        let fixed = raw_signature(&short, 32).unwrap();
        assert_eq!((fixed[0], fixed[1], fixed[32], fixed[33]), (0, 0x7f, 0, 1));
        // DER: r with a sign byte, s short.
        let mut der = vec![0x30, 0x45, 0x02, 0x21, 0x00];
        der.extend([0x80u8; 32]);
        der.extend([0x02, 0x20]);
        der.extend([0x05u8; 32]);
        let rs = raw_signature(&der, 32).unwrap();
        assert_eq!(rs.len(), 64);
        assert_eq!((rs[0], rs[31], rs[32]), (0x80, 0x80, 0x05));
        assert!(raw_signature(&[1, 2, 3], 32).is_err());
    }

    #[test]
    fn ec_points_and_spki() {
        let mut point = vec![0x04];
        point.extend([9u8; 64]);
        let mut der = vec![0x04, 0x41];
        der.extend(&point);
        assert_eq!(ec_point(Curve::P256, &der).unwrap(), point);
        assert_eq!(ec_point(Curve::P256, &point).unwrap(), point);
        assert!(ec_point(Curve::P384, &der).is_err());
        // The SPKI of a software key's public half equals the one built from its JWK.
        for c in Curve::ALL {
            let k = crate::PrivateKey::generate_ec(c).unwrap();
            let mut jwk = k.public_jwk(&[]).unwrap();
            jwk.kty = "EC-HSM".into();
            assert_eq!(public_pem(&jwk).unwrap(), k.public_pem().unwrap());
        }
    }
}
