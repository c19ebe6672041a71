//! XEP-0050 ad-hoc commands with the XEP-0133 administration commands (`rookery-adhoc`) for
//! the accounts in `admins = [...]`.

use anyhow::anyhow;
use rookery_jid::BareJid;

use crate::config::Config;

/// The configured administrators, each a bare JID; the first invalid one is the error.
pub fn admins(cfg: &Config) -> anyhow::Result<Vec<BareJid>> {
    cfg.admins
        .iter()
        .map(|a| {
            BareJid::parse(a.trim())
                .ok()
                .filter(|j| j.local().is_some())
                .ok_or_else(|| anyhow!("admins: {a:?} is not the bare JID of an account"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admins_are_bare_account_jids() {
        let mut cfg = Config {
            admins: vec!["root@localhost".into()],
            ..Config::default()
        };
        assert_eq!(admins(&cfg).map(|a| a.len()).ok(), Some(1));
        cfg.admins.push("localhost".into());
        assert!(admins(&cfg).is_err());
    }
}
