//! Deliveries that wait behind another of their conversation, kept in memory so that the
//! engine can start one the moment the delivery ahead of it succeeds.
//!
//! A conversation's events go out one at a time: the next may leave only once the previous
//! was answered with a 2xx. Through the database that hand-over costs a commit and a claim
//! between two events, so a busy conversation moves at the speed of the writer, not of the
//! receiver. When the write that stores an event finds its delivery waiting behind another,
//! it hands the delivery to the engine too (with `after`, the delivery ahead of it), and the
//! engine keeps it here. When the delivery ahead succeeds, the attempt task takes its
//! follower and sends it at once, and the outcome it reports names the follower with its
//! lease, so that the completion that promotes it leases it instead of making it due.
//!
//! Nothing here is needed for correctness: the database still holds every delivery in
//! order, and a follower that is missing (never handed over, dropped, expired) simply goes
//! the database's way, promoted by the completion of the one ahead. A crash between a
//! follower's attempt and the commit of its leader's outcome sends both again, in order,
//! which at-least-once allows. Entries are bounded in number (16,384) and in age: a follower
//! holds its endpoint's URL and secret as they were when it was stored, so after
//! [`FOLLOWER_TTL`] it is left to the database, which reads them fresh; a change to an
//! endpoint made through this process forgets its followers at once.
//!
//! Order holds because `after` names the direct predecessor (the queue's tail when the
//! follower was written): a queue only grows at its tail, so once the leader is delivered its
//! follower is the oldest waiting delivery. A failed attempt forgets everything behind it (the
//! conversation waits for the retry). Both backends hand followers over, counted within the
//! same limit of four deliveries per new event as the heads they claim.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::store::DueDelivery;

/// The most followers kept at once (beyond it, new ones go the database's way).
const MAX_FOLLOWERS: usize = 16_384;
/// How long a follower may wait here before it is left to the database.
pub const FOLLOWER_TTL: Duration = Duration::from_secs(2);

/// Followers by the id of the delivery they follow.
#[derive(Default)]
pub struct Followers {
    by_leader: Mutex<HashMap<i64, Waiting>>,
}

struct Waiting {
    due: DueDelivery,
    since: Instant,
}

impl Followers {
    /// Keeps a delivery that follows `due.after` (ignored without one).
    pub fn add(&self, due: DueDelivery) {
        let Some(leader) = due.after else { return };
        let mut by_leader = self.by_leader.lock().expect("followers lock");
        if by_leader.len() >= MAX_FOLLOWERS {
            by_leader.retain(|_, w| w.since.elapsed() < FOLLOWER_TTL);
            if by_leader.len() >= MAX_FOLLOWERS {
                return;
            }
        }
        by_leader.insert(
            leader,
            Waiting {
                due,
                since: Instant::now(),
            },
        );
    }

    /// The delivery that follows `leader`, if one is here and fresh enough.
    pub fn take(&self, leader: i64) -> Option<DueDelivery> {
        let waiting = self.by_leader.lock().expect("followers lock").remove(&leader)?;
        (waiting.since.elapsed() < FOLLOWER_TTL).then_some(waiting.due)
    }

    /// Forgets everything queued behind `leader` (its attempt failed: the conversation waits).
    pub fn drop_chain(&self, leader: i64) {
        let mut by_leader = self.by_leader.lock().expect("followers lock");
        let mut next = leader;
        while let Some(waiting) = by_leader.remove(&next) {
            next = waiting.due.delivery_id;
        }
    }

    /// Forgets the followers of an endpoint (its URL, secret or state changed).
    pub fn forget_endpoint(&self, endpoint_id: &str) {
        self.by_leader
            .lock()
            .expect("followers lock")
            .retain(|_, w| w.due.endpoint_id != endpoint_id);
    }

    /// Forgets everything (the engine stops).
    pub fn clear(&self) {
        self.by_leader.lock().expect("followers lock").clear();
    }

    /// How many are kept.
    #[cfg(test)]
    pub fn count(&self) -> usize {
        self.by_leader.lock().expect("followers lock").len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::webhooks::SigningSecret;

    fn due(id: i64, after: Option<i64>, endpoint: &str) -> DueDelivery {
        DueDelivery {
            delivery_id: id,
            event_seq: id,
            event_id: format!("evt_{id}"),
            instance_id: 1,
            endpoint_id: endpoint.into(),
            url: "http://127.0.0.1:9/hook".into(),
            secret: SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap(),
            previous_secret: None,
            rate_limit: None,
            payload: Arc::from("{}"),
            attempt: 1,
            failures: 0,
            lease_until: 0,
            after,
        }
    }

    #[test]
    fn a_follower_is_taken_once_by_its_leader() {
        let followers = Followers::default();
        followers.add(due(2, Some(1), "ep_a"));
        followers.add(due(3, None, "ep_a"));
        assert_eq!(followers.count(), 1, "a delivery with nothing ahead is not a follower");
        assert!(followers.take(2).is_none());
        assert_eq!(followers.take(1).map(|d| d.delivery_id), Some(2));
        assert!(followers.take(1).is_none());
    }

    #[test]
    fn a_failure_drops_the_whole_chain_behind_it() {
        let followers = Followers::default();
        followers.add(due(2, Some(1), "ep_a"));
        followers.add(due(3, Some(2), "ep_a"));
        followers.add(due(9, Some(8), "ep_a"));
        followers.drop_chain(1);
        assert!(followers.take(1).is_none());
        assert!(followers.take(2).is_none());
        assert_eq!(followers.take(8).map(|d| d.delivery_id), Some(9));
    }

    #[test]
    fn an_endpoint_change_forgets_its_followers_only() {
        let followers = Followers::default();
        followers.add(due(2, Some(1), "ep_a"));
        followers.add(due(5, Some(4), "ep_b"));
        followers.forget_endpoint("ep_a");
        assert!(followers.take(1).is_none());
        assert_eq!(followers.take(4).map(|d| d.delivery_id), Some(5));
    }
}
