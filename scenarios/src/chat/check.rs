//! The chat room's checker: over what the members saw, every message acknowledged to its sender reached
//! every member that stayed connected, once, in the sender's order; nobody received a message that was not
//! sent to their room; and the room's history kept every acknowledged message.
//!
//! A member is one connection (a reconnect is a new member). "Stayed connected" is exact: the member saw
//! its `101` before the sender sent the message (so the room had accepted its socket before the message
//! arrived), and saw no close (nor error) before the log ended. The log ends after the faults stopped and
//! a settling time longer than a dead connection takes to be noticed, so a member whose connection the
//! room dropped has seen its close by then.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// What one member's client saw or did, on the front's clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChatEvent {
    /// The member's `101` arrived: the room had accepted its socket.
    Joined {
        /// The member (its connection's number).
        conn: u32,
        /// Its room.
        room: usize,
        /// When.
        at: Duration,
    },
    /// The member sent message `id` (ids grow per member).
    Sent {
        /// The sender.
        conn: u32,
        /// The message.
        id: u32,
        /// When.
        at: Duration,
    },
    /// The room acknowledged message `id` to its sender.
    Acked {
        /// The sender.
        conn: u32,
        /// The message.
        id: u32,
        /// When.
        at: Duration,
    },
    /// The member received message `id` of member `from`.
    Received {
        /// The receiver.
        conn: u32,
        /// The sender.
        from: u32,
        /// The message.
        id: u32,
        /// When.
        at: Duration,
    },
    /// The member's connection closed (code 1006: it dropped) or failed.
    Closed {
        /// The member.
        conn: u32,
        /// The close code (1009 for an error).
        code: u16,
        /// When.
        at: Duration,
    },
}

/// What the checker counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChatStats {
    /// Members (connections) that joined.
    pub members: usize,
    /// Messages sent.
    pub sent: usize,
    /// Messages acknowledged.
    pub acked: usize,
    /// Deliveries the check required (an acknowledged message × a member that stayed connected).
    pub required_deliveries: usize,
    /// Deliveries seen.
    pub deliveries: usize,
    /// Closes by code.
    pub closes: BTreeMap<u16, usize>,
}

/// A violation: what broke, the log lines behind it, and the stretch of time they span.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatViolation {
    /// What broke, in one sentence.
    pub message: String,
    /// The members' events behind it, one per line.
    pub lines: Vec<String>,
    /// From the first of those events to the last.
    pub window: Option<(Duration, Duration)>,
}

impl std::fmt::Display for ChatViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<String> for ChatViolation {
    fn from(message: String) -> ChatViolation {
        ChatViolation { message, lines: Vec::new(), window: None }
    }
}

impl ChatEvent {
    /// When it happened.
    pub fn at(&self) -> Duration {
        match *self {
            ChatEvent::Joined { at, .. }
            | ChatEvent::Sent { at, .. }
            | ChatEvent::Acked { at, .. }
            | ChatEvent::Received { at, .. }
            | ChatEvent::Closed { at, .. } => at,
        }
    }
}

/// The evidence of a lost broadcast: the message's send and ack, both members' joins and closes, and what
/// the receiver got from the sender.
fn lost_broadcast(log: &[ChatEvent], message: String, sender: u32, id: u32, receiver: u32) -> ChatViolation {
    let relevant = |e: &ChatEvent| match *e {
        ChatEvent::Sent { conn, id: i, .. } | ChatEvent::Acked { conn, id: i, .. } => {
            conn == sender && i == id
        }
        ChatEvent::Joined { conn, .. } | ChatEvent::Closed { conn, .. } => conn == receiver || conn == sender,
        ChatEvent::Received { conn, from, .. } => conn == receiver && from == sender,
    };
    let events: Vec<&ChatEvent> = log.iter().filter(|e| relevant(e)).collect();
    let sent = events.iter().find(|e| matches!(e, ChatEvent::Sent { .. })).map(|e| e.at());
    let acked = events.iter().find(|e| matches!(e, ChatEvent::Acked { .. })).map(|e| e.at());
    let lines = events.iter().map(|e| format!("{:>12.3?} {e:?}", e.at())).collect();
    ChatViolation { message, lines, window: sent.zip(acked) }
}

#[derive(Default)]
struct Member {
    room: usize,
    joined: Duration,
    closed: bool,
    /// Sent: id → when.
    sent: BTreeMap<u32, Duration>,
    acked: BTreeSet<u32>,
    /// Received: sender → ids in arrival order.
    received: BTreeMap<u32, Vec<u32>>,
}

/// Checks the log against the properties in the module docs; `histories` holds each room's final history
/// as `(sender, id)` pairs.
pub fn check_chat(
    log: &[ChatEvent],
    histories: &BTreeMap<usize, Vec<(u32, u32)>>,
) -> Result<ChatStats, ChatViolation> {
    let mut members: BTreeMap<u32, Member> = BTreeMap::new();
    let mut stats = ChatStats::default();
    for e in log {
        match *e {
            ChatEvent::Joined { conn, room, at } => {
                let m = members.entry(conn).or_default();
                m.room = room;
                m.joined = at;
                stats.members += 1;
            }
            ChatEvent::Sent { conn, id, at } => {
                let m = members.get_mut(&conn).ok_or(format!("m{conn} sent {id} before it joined"))?;
                m.sent.insert(id, at);
                stats.sent += 1;
            }
            ChatEvent::Acked { conn, id, .. } => {
                let m = members.get_mut(&conn).ok_or(format!("m{conn} got an ack before it joined"))?;
                if !m.sent.contains_key(&id) {
                    return Err(format!("m{conn} got an ack for message {id}, which it never sent").into());
                }
                if !m.acked.insert(id) {
                    return Err(format!("m{conn} got message {id} acknowledged twice").into());
                }
                stats.acked += 1;
            }
            ChatEvent::Received { conn, from, id, .. } => {
                let m = members.get_mut(&conn).ok_or(format!("m{conn} received before it joined"))?;
                m.received.entry(from).or_default().push(id);
                stats.deliveries += 1;
            }
            ChatEvent::Closed { conn, code, .. } => {
                if let Some(m) = members.get_mut(&conn) {
                    m.closed = true;
                }
                *stats.closes.entry(code).or_default() += 1;
            }
        }
    }
    // Nothing received that was not sent to the receiver's room; nothing twice; in the sender's order.
    for (conn, m) in &members {
        for (from, ids) in &m.received {
            let sender =
                members.get(from).ok_or(format!("m{conn} received from m{from}, who never joined"))?;
            if sender.room != m.room {
                return Err(format!(
                    "m{conn} (room {}) received from m{from} of room {}",
                    m.room, sender.room
                )
                .into());
            }
            for id in ids {
                if !sender.sent.contains_key(id) {
                    return Err(format!(
                        "m{conn} received message {id} of m{from}, which m{from} never sent"
                    )
                    .into());
                }
            }
            for w in ids.windows(2) {
                if w[1] == w[0] {
                    return Err(format!("m{conn} received message {} of m{from} twice", w[0]).into());
                }
                if w[1] < w[0] {
                    return Err(format!(
                        "m{conn} received m{from}'s messages out of the sender's order: {} after {} ({ids:?})",
                        w[1], w[0]
                    ).into());
                }
            }
        }
    }
    // Every acknowledged message reached every member that stayed connected.
    for (sender_conn, sender) in &members {
        for id in &sender.acked {
            let sent_at = sender.sent[id];
            for (conn, m) in &members {
                if conn == sender_conn || m.room != sender.room || m.closed || m.joined >= sent_at {
                    continue;
                }
                stats.required_deliveries += 1;
                let got = m.received.get(sender_conn).is_some_and(|ids| ids.contains(id));
                if !got {
                    let message = format!(
                        "message {id} of m{sender_conn} (room {}, sent at {sent_at:?}, acknowledged) never reached \
                         m{conn}, which joined at {:?} and stayed connected",
                        sender.room, m.joined
                    );
                    return Err(lost_broadcast(log, message, *sender_conn, *id, *conn));
                }
            }
        }
    }
    // The history kept every acknowledged message.
    for (conn, m) in &members {
        let history = histories.get(&m.room).ok_or(format!("no history of room {}", m.room))?;
        for id in &m.acked {
            if !history.contains(&(*conn, *id)) {
                return Err(format!(
                    "message {id} of m{conn} was acknowledged but is not in room {}'s history",
                    m.room
                )
                .into());
            }
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ChatEvent::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Two members of room 0; m1 sends one message, acknowledged, m2 receives it.
    fn good() -> Vec<ChatEvent> {
        vec![
            Joined { conn: 1, room: 0, at: ms(1) },
            Joined { conn: 2, room: 0, at: ms(2) },
            Sent { conn: 1, id: 0, at: ms(3) },
            Sent { conn: 1, id: 1, at: ms(4) },
            Received { conn: 2, from: 1, id: 0, at: ms(5) },
            Acked { conn: 1, id: 0, at: ms(6) },
            Received { conn: 2, from: 1, id: 1, at: ms(7) },
            Acked { conn: 1, id: 1, at: ms(8) },
        ]
    }

    fn history() -> BTreeMap<usize, Vec<(u32, u32)>> {
        BTreeMap::from([(0, vec![(1, 0), (1, 1)])])
    }

    #[test]
    fn a_correct_log_passes_and_is_counted() {
        let stats = check_chat(&good(), &history()).unwrap();
        assert_eq!(
            (stats.members, stats.sent, stats.acked, stats.required_deliveries, stats.deliveries),
            (2, 2, 2, 2, 2)
        );
    }

    #[test]
    fn a_lost_broadcast_to_a_member_that_stayed_is_caught() {
        let mut log = good();
        log.retain(|e| !matches!(e, Received { id: 1, .. }));
        let e = check_chat(&log, &history()).unwrap_err();
        assert!(e.message.contains("message 1 of m1") && e.message.contains("never reached m2"), "{e}");
        assert_eq!(e.window, Some((ms(4), ms(8))), "from the send to the ack");
        assert!(
            e.lines.iter().any(|l| l.contains("Acked")) && e.lines.iter().any(|l| l.contains("Joined")),
            "{:?}",
            e.lines
        );
    }

    #[test]
    fn a_member_that_closed_or_joined_after_the_send_is_owed_nothing() {
        let mut log = good();
        log.retain(|e| !matches!(e, Received { .. }));
        log.push(Closed { conn: 2, code: 1006, at: ms(9) });
        assert!(check_chat(&log, &history()).is_ok());
        let mut log = good();
        log.retain(|e| !matches!(e, Received { .. }));
        log[1] = Joined { conn: 2, room: 0, at: ms(4) };
        assert!(check_chat(&log, &history()).is_ok(), "joined at the second send: owed nothing");
    }

    #[test]
    fn reordering_duplicates_phantoms_and_other_rooms_are_caught() {
        let mut log = good();
        log.swap(4, 6);
        assert!(check_chat(&log, &history()).unwrap_err().message.contains("out of the sender's order"));
        let mut log = good();
        log.push(Received { conn: 2, from: 1, id: 1, at: ms(9) });
        assert!(check_chat(&log, &history()).unwrap_err().message.contains("twice"));
        let mut log = good();
        log.push(Received { conn: 2, from: 1, id: 7, at: ms(9) });
        assert!(check_chat(&log, &history()).unwrap_err().message.contains("never sent"));
        let mut log = good();
        log.push(Joined { conn: 3, room: 1, at: ms(1) });
        log.push(Received { conn: 3, from: 1, id: 0, at: ms(9) });
        assert!(check_chat(&log, &history()).unwrap_err().message.contains("received from m1 of room 0"));
    }

    #[test]
    fn an_acknowledged_message_missing_from_the_history_is_caught() {
        let e = check_chat(&good(), &BTreeMap::from([(0, vec![(1, 0)])])).unwrap_err().message;
        assert!(e.contains("message 1 of m1 was acknowledged but is not in room 0's history"), "{e}");
    }
}
