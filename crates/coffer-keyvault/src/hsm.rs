//! Hardware-protected keys through PKCS#11 (`cryptoki`): RSA keys generated inside a
//! token as sensitive, non-extractable private objects and used there.
//!
//! A token is named by module path, token label and a PIN file (the PIN is read
//! from the file, kept in a `SecretString`, never printed). Each key version is a
//! key pair whose `CKA_ID` is the 16 bytes of its version. Public-key operations
//! (wrapKey, encrypt) run in software on the public JWK; private operations
//! (unwrapKey, decrypt) run in the token.
//!
//! SoftHSM2 2.6.1 refuses OAEP with SHA-256 (`CKR_ARGUMENTS_BAD`); [`Hsm::open`]
//! probes the token once and [`Hsm::supports_oaep_sha256`] reports it, so callers
//! can fall back to `RSA-OAEP` (SHA-1) and record the algorithm they used.

use std::path::{Path, PathBuf};

use aws_lc_rs::{
    encoding::AsDer,
    rsa::{OaepPublicEncryptingKey, PublicEncryptingKey, PublicKeyComponents},
};
use coffer_crypto::SecretBytes;
use cryptoki::{
    context::{CInitializeArgs, CInitializeFlags, Pkcs11},
    mechanism::{
        Mechanism, MechanismType,
        rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource},
    },
    object::{Attribute, AttributeType, KeyType as CkKeyType, ObjectClass, ObjectHandle},
    session::{Session, UserType},
    slot::Slot,
    types::AuthPin,
};

use crate::{EncryptionAlgorithm, JsonWebKey, KvError, Result, b64url, from_b64url, pem};

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
        let mut hsm = Self {
            _ctx: ctx,
            session,
            oaep_sha256: false,
        };
        hsm.oaep_sha256 = hsm.probe_oaep_sha256();
        Ok(hsm)
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

    fn find(&self, id: &[u8], class: ObjectClass) -> Result<ObjectHandle> {
        self.session
            .find_objects(&[
                Attribute::Class(class),
                Attribute::KeyType(CkKeyType::RSA),
                Attribute::Id(id.to_vec()),
            ])
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

/// RSA-OAEP encryption with a public JWK (software; public data only).
pub fn public_encrypt(
    jwk: &JsonWebKey,
    alg: EncryptionAlgorithm,
    plaintext: &[u8],
) -> Result<Vec<u8>> {
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

/// PEM (`PUBLIC KEY`) of a public RSA JWK.
pub fn public_pem(jwk: &JsonWebKey) -> Result<String> {
    let der = public_key(jwk)?
        .as_der()
        .map_err(|_| KvError::Crypto("public key encoding failed".into()))?;
    Ok(pem::encode("PUBLIC KEY", der.as_ref()))
}
