//! Resource naming rules. Each rule is stated in full in its error message.

use crate::{Error, ErrorCode, Result};

fn bad(kind: &str, name: &str, rule: &str) -> Error {
    Error::new(
        ErrorCode::InvalidResourceName,
        format!("invalid {kind} name {name:?}: {rule}"),
    )
}

/// Backup vault names: `^[A-Za-z][-A-Za-z0-9]*[A-Za-z0-9]$`, 2–50 characters.
pub fn validate_vault_name(name: &str) -> Result<()> {
    const RULE: &str = "a backup vault name must be 2-50 characters long, start with a letter, \
        end with a letter or digit, and contain only letters, digits and hyphens \
        (pattern ^[A-Za-z][-A-Za-z0-9]*[A-Za-z0-9]$)";
    let b = name.as_bytes();
    let ok = (2..=50).contains(&b.len())
        && b[0].is_ascii_alphabetic()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-');
    if ok {
        Ok(())
    } else {
        Err(bad("backup vault", name, RULE))
    }
}

/// Resource group names: 1–90 characters of letters, digits, `-`, `_`, `.`, `(`, `)`,
/// not ending with `.`.
pub fn validate_group_name(name: &str) -> Result<()> {
    const RULE: &str = "a resource group name must be 1-90 characters long, contain only ASCII \
        letters, digits, hyphens, underscores, periods and parentheses, and not end with a period";
    let b = name.as_bytes();
    let ok = (1..=90).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.()".contains(c))
        && !name.ends_with('.');
    if ok {
        Ok(())
    } else {
        Err(bad("resource group", name, RULE))
    }
}

/// Backup instance names: 1–100 characters of letters, digits, `-`, `_`, `.`,
/// starting with a letter or digit and not ending with `.`.
pub fn validate_instance_name(name: &str) -> Result<()> {
    const RULE: &str = "a backup instance name must be 1-100 characters long, start with a letter \
        or digit, contain only ASCII letters, digits, hyphens, underscores and periods, and not \
        end with a period";
    let b = name.as_bytes();
    let ok = (1..=100).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
        && !name.ends_with('.');
    if ok {
        Ok(())
    } else {
        Err(bad("backup instance", name, RULE))
    }
}

/// `Ok` if a naming rule holds, else `InvalidResourceName` with `message()`.
pub(crate) fn name_rule(ok: bool, message: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::new(ErrorCode::InvalidResourceName, message()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_names() {
        for ok in ["ab", "a1", "my-vault-2", &"a".repeat(50)] {
            assert!(validate_vault_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a",
            "1ab",
            "-ab",
            "ab-",
            "a_b",
            "a b",
            "ä-b",
            &"a".repeat(51),
            "a/b",
        ] {
            let e = validate_vault_name(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidResourceName, "{bad}");
        }
    }

    #[test]
    fn group_and_instance_names() {
        assert!(validate_group_name("rg_1.(x)").is_ok());
        assert!(validate_group_name("rg.").is_err());
        assert!(validate_group_name("a/b").is_err());
        assert!(validate_instance_name("docs.v2").is_ok());
        assert!(validate_instance_name("../x").is_err());
        assert!(validate_instance_name("").is_err());
    }
}
