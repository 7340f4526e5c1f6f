//! In-flight debits: what a payer's unresolved settlements will take from its balance.
//!
//! Every unresolved record (`reserved`, `broadcast`) debits its amount from its payer's balance
//! of its asset on its network, in the replay store ([`crate::replay::keys::debits_key`]): the
//! debit is written just before the record is created (the Redis store: in the payer's own hash
//! slot, so that the record's slot can be another one on Redis Cluster) or in the same atomic
//! step (the in-memory store), and removed just after (or with) the step that resolves the
//! record (`confirmed`, `delivered`, `failed`, `expired`) or deletes it (refused before
//! signing, abandoned). A takeover keeps the record's debit (one per replay key: never counted
//! twice); a debit whose record expired unresolved, or whose record is resolved already (a
//! release cut short by a crash), is ignored. A debit left by a crash between its write and
//! the record's creation counts until it expires: the check errs towards refusing.
//!
//! Each debit carries the order of its reservation. Before a settlement is signed, the engine
//! reads the debits ordered before its own that are still in flight ([`ahead`]), then the
//! payer's balance at the latest block ([`crate::family::ChainFamily::check_funds`]), and
//! refuses it unless `balance - ahead >= amount`. Why this is enough: of any set of
//! settlements of one payer that pass the check, the last reserved one counted every other
//! that was still in flight when it read the debits, and every other that resolved before that
//! read is in the balance it read after (landed) or took nothing (failed, expired). So the
//! payer's balance covers them all, and none of them reverts for lack of funds (unless the
//! payer moves the funds meanwhile). Settlements reserved after one do not delay it: the first
//! ones reserved are the ones that settle.

/// One in-flight debit as stored: `{seq}:{expires_ms}:{amount}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Debit {
    /// Order of reservation (a shared counter).
    pub seq: u64,
    /// Unix ms when its record expires; a debit outlived by its record counts no more.
    pub expires_ms: u64,
    /// Atomic units, decimal.
    pub amount: String,
}

impl Debit {
    /// The stored form.
    pub fn encode(&self) -> String {
        format!("{}:{}:{}", self.seq, self.expires_ms, self.amount)
    }

    /// Parses the stored form.
    pub fn decode(raw: &str) -> Option<Debit> {
        let mut parts = raw.splitn(3, ':');
        Some(Debit {
            seq: parts.next()?.parse().ok()?,
            expires_ms: parts.next()?.parse().ok()?,
            amount: parts.next()?.to_string(),
        })
    }
}

/// Of the debits `all` (replay key → stored form) of one payer at Unix ms `now_ms`: the amounts
/// reserved before the one of `key` and still in flight (every other live one when `key` has
/// none), and the fields to prune (expired or unreadable; an unreadable one also counts, as an
/// unknown amount).
pub fn ahead<'a>(
    all: impl IntoIterator<Item = (&'a str, &'a str)>,
    key: &str,
    now_ms: u64,
) -> (Vec<String>, Vec<String>) {
    let (entries, prune) = ahead_entries(all, key, now_ms);
    (entries.into_iter().map(|(_, a)| a).collect(), prune)
}

/// [`ahead`] with the replay key of each amount counted (`(replay key, amount)`), so that a
/// store can drop the debits whose record is resolved already (a debit released in its own
/// step after the record's, [`crate::replay::keys`]).
pub fn ahead_entries<'a>(
    all: impl IntoIterator<Item = (&'a str, &'a str)>,
    key: &str,
    now_ms: u64,
) -> (Vec<(String, String)>, Vec<String>) {
    let entries: Vec<(&str, Option<Debit>)> = all
        .into_iter()
        .map(|(k, v)| (k, Debit::decode(v)))
        .collect();
    let mine = entries
        .iter()
        .find(|(k, _)| *k == key)
        .and_then(|(_, d)| d.as_ref().map(|d| d.seq));
    let mut amounts = Vec::new();
    let mut prune = Vec::new();
    for (k, debit) in entries {
        if k == key {
            continue;
        }
        match debit {
            None => {
                amounts.push((k.to_string(), u128::MAX.to_string()));
                prune.push(k.to_string());
            }
            Some(d) if d.expires_ms <= now_ms => prune.push(k.to_string()),
            Some(d) if mine.is_some_and(|seq| d.seq > seq) => {}
            Some(d) => amounts.push((k.to_string(), d.amount)),
        }
    }
    (amounts, prune)
}

/// The sum of `amounts` (atomic units), saturating; an unreadable amount counts as the most
/// there is (the check then refuses: never the other way round).
pub fn total(amounts: &[String]) -> u128 {
    amounts.iter().fold(0u128, |sum, a| {
        sum.saturating_add(a.parse::<u128>().unwrap_or(u128::MAX))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(seq: u64, expires_ms: u64, amount: &str) -> String {
        Debit {
            seq,
            expires_ms,
            amount: amount.into(),
        }
        .encode()
    }

    #[test]
    fn only_live_debits_reserved_before_count() {
        let all = [
            ("a".to_string(), d(1, 10_000, "400")),
            ("b".to_string(), d(2, 10_000, "300")),
            ("me".to_string(), d(3, 10_000, "400")),
            ("later".to_string(), d(4, 10_000, "999")),
            ("old".to_string(), d(0, 500, "700")),
        ];
        let view = || all.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        let (mut amounts, prune) = ahead(view(), "me", 1_000);
        amounts.sort();
        assert_eq!(amounts, vec!["300", "400"]);
        assert_eq!(prune, vec!["old"]);
        assert_eq!(total(&amounts), 700);
        // Without a debit of its own, every other live one counts.
        let (amounts, _) = ahead(view(), "none", 1_000);
        assert_eq!(total(&amounts), 400 + 300 + 400 + 999);
        assert_eq!(Debit::decode(&d(7, 8, "9")).unwrap().amount, "9");
        assert_eq!(total(&["1".into(), "x".into()]), u128::MAX);
    }
}
