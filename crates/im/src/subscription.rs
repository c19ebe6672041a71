//! RFC 6121 Appendix A: the presence subscription state machine, as tables.
//!
//! A roster item is in one of nine states (A.1): the subscription (`none`, `to`, `from`,
//! `both`) plus "pending out" (the user asked to subscribe, `ask='subscribe'`) and "pending in"
//! (the contact asked and the user has not answered). A contact that is not in the roster is in
//! state `None` (possibly with a stored request, `None + Pending In`).
//!
//! Eight events move it: the user's outbound `subscribe`, `subscribed`, `unsubscribe`,
//! `unsubscribed` (A.2) and the same four inbound from the contact (A.3). For each (state,
//! event) the tables give the next state; [`transition`] adds what the server does with the
//! stanza (route or deliver it, drop it, auto-reply) and the pre-approval rules of §3.4.

use rookery_store::rosters::Subscription;

/// The nine subscription states of RFC 6121 Appendix A.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// No subscription either way, nothing pending.
    None,
    /// None + Pending Out.
    NonePendingOut,
    /// None + Pending In.
    NonePendingIn,
    /// None + Pending Out + Pending In.
    NonePendingOutIn,
    /// The user is subscribed to the contact.
    To,
    /// To + Pending In.
    ToPendingIn,
    /// The contact is subscribed to the user.
    From,
    /// From + Pending Out.
    FromPendingOut,
    /// Both.
    Both,
}

/// Every state, in table order.
pub const STATES: [State; 9] = [
    State::None,
    State::NonePendingOut,
    State::NonePendingIn,
    State::NonePendingOutIn,
    State::To,
    State::ToPendingIn,
    State::From,
    State::FromPendingOut,
    State::Both,
];

/// A subscription stanza, seen from the user whose roster item changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// The user sends `subscribe` to the contact (A.2.1).
    OutSubscribe,
    /// The user sends `unsubscribe` (A.2.2).
    OutUnsubscribe,
    /// The user sends `subscribed`: approves the contact's request (A.2.3).
    OutSubscribed,
    /// The user sends `unsubscribed`: denies or cancels the contact's subscription (A.2.4).
    OutUnsubscribed,
    /// The contact's `subscribe` arrives (A.3.1).
    InSubscribe,
    /// The contact's `unsubscribe` arrives (A.3.2).
    InUnsubscribe,
    /// The contact's `subscribed` arrives (A.3.3).
    InSubscribed,
    /// The contact's `unsubscribed` arrives (A.3.4).
    InUnsubscribed,
}

/// Every event, in table order.
pub const EVENTS: [Event; 8] = [
    Event::OutSubscribe,
    Event::OutUnsubscribe,
    Event::OutSubscribed,
    Event::OutUnsubscribed,
    Event::InSubscribe,
    Event::InUnsubscribe,
    Event::InSubscribed,
    Event::InUnsubscribed,
];

impl State {
    /// The state of a roster item (`None` when the contact is not in the roster).
    pub fn of(sub: Subscription, pending_out: bool, pending_in: bool) -> State {
        match (sub, pending_out, pending_in) {
            (Subscription::None, false, false) => State::None,
            (Subscription::None, true, false) => State::NonePendingOut,
            (Subscription::None, false, true) => State::NonePendingIn,
            (Subscription::None, true, true) => State::NonePendingOutIn,
            (Subscription::To, _, false) => State::To,
            (Subscription::To, _, true) => State::ToPendingIn,
            (Subscription::From, false, _) => State::From,
            (Subscription::From, true, _) => State::FromPendingOut,
            (Subscription::Both, _, _) => State::Both,
        }
    }

    /// The stored subscription value.
    pub fn subscription(self) -> Subscription {
        match self {
            State::None
            | State::NonePendingOut
            | State::NonePendingIn
            | State::NonePendingOutIn => Subscription::None,
            State::To | State::ToPendingIn => Subscription::To,
            State::From | State::FromPendingOut => Subscription::From,
            State::Both => Subscription::Both,
        }
    }

    /// Pending out (`ask='subscribe'`).
    pub fn pending_out(self) -> bool {
        matches!(
            self,
            State::NonePendingOut | State::NonePendingOutIn | State::FromPendingOut
        )
    }

    /// Pending in (a stored request from the contact).
    pub fn pending_in(self) -> bool {
        matches!(
            self,
            State::NonePendingIn | State::NonePendingOutIn | State::ToPendingIn
        )
    }

    fn index(self) -> usize {
        STATES.iter().position(|s| *s == self).unwrap_or(0)
    }
}

use State as S;

/// The next state for each event, indexed like [`STATES`]; `None` means "no state change".
/// Transcribed row by row from RFC 6121 A.2.1–A.2.4 and A.3.1–A.3.4.
fn table(event: Event) -> [Option<State>; 9] {
    match event {
        // A.2.1 outbound subscribe
        Event::OutSubscribe => [
            Some(S::NonePendingOut),   // None
            None,                      // None + Pending Out
            Some(S::NonePendingOutIn), // None + Pending In
            None,                      // None + Pending Out + In
            None,                      // To
            None,                      // To + Pending In
            Some(S::FromPendingOut),   // From
            None,                      // From + Pending Out
            None,                      // Both
        ],
        // A.2.2 outbound unsubscribe
        Event::OutUnsubscribe => [
            None,                   // None
            Some(S::None),          // None + Pending Out
            None,                   // None + Pending In
            Some(S::NonePendingIn), // None + Pending Out + In
            Some(S::None),          // To
            Some(S::NonePendingIn), // To + Pending In
            None,                   // From
            Some(S::From),          // From + Pending Out
            Some(S::From),          // Both
        ],
        // A.2.3 outbound subscribed
        Event::OutSubscribed => [
            None,                    // None (pre-approval, §3.4)
            None,                    // None + Pending Out (pre-approval)
            Some(S::From),           // None + Pending In
            Some(S::FromPendingOut), // None + Pending Out + In
            None,                    // To (pre-approval)
            Some(S::Both),           // To + Pending In
            None,                    // From
            None,                    // From + Pending Out
            None,                    // Both
        ],
        // A.2.4 outbound unsubscribed
        Event::OutUnsubscribed => [
            None,                    // None
            None,                    // None + Pending Out
            Some(S::None),           // None + Pending In
            Some(S::NonePendingOut), // None + Pending Out + In
            None,                    // To
            Some(S::To),             // To + Pending In
            Some(S::None),           // From
            Some(S::NonePendingOut), // From + Pending Out
            Some(S::To),             // Both
        ],
        // A.3.1 inbound subscribe
        Event::InSubscribe => [
            Some(S::NonePendingIn),    // None
            Some(S::NonePendingOutIn), // None + Pending Out
            None,                      // None + Pending In
            None,                      // None + Pending Out + In
            Some(S::ToPendingIn),      // To
            None,                      // To + Pending In
            None,                      // From (auto-reply subscribed)
            None,                      // From + Pending Out (auto-reply subscribed)
            None,                      // Both (auto-reply subscribed)
        ],
        // A.3.2 inbound unsubscribe
        Event::InUnsubscribe => [
            None,                    // None
            None,                    // None + Pending Out
            Some(S::None),           // None + Pending In
            Some(S::NonePendingOut), // None + Pending Out + In
            None,                    // To
            Some(S::To),             // To + Pending In
            Some(S::None),           // From
            Some(S::NonePendingOut), // From + Pending Out
            Some(S::To),             // Both
        ],
        // A.3.3 inbound subscribed
        Event::InSubscribed => [
            None,                 // None
            Some(S::To),          // None + Pending Out
            None,                 // None + Pending In
            Some(S::ToPendingIn), // None + Pending Out + In
            None,                 // To
            None,                 // To + Pending In
            None,                 // From
            Some(S::Both),        // From + Pending Out
            None,                 // Both
        ],
        // A.3.4 inbound unsubscribed
        Event::InUnsubscribed => [
            None,                   // None
            Some(S::None),          // None + Pending Out
            None,                   // None + Pending In
            Some(S::NonePendingIn), // None + Pending Out + In
            Some(S::None),          // To
            Some(S::NonePendingIn), // To + Pending In
            None,                   // From
            Some(S::From),          // From + Pending Out
            Some(S::From),          // Both
        ],
    }
}

/// What to do with the stanza that caused a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Outbound: route it to the contact. Inbound: deliver it to the user.
    Forward,
    /// Drop it (nothing changed, nothing to tell).
    Drop,
    /// Inbound `subscribe` the user already approved (or pre-approved): answer `subscribed`
    /// on the user's behalf, do not deliver.
    AutoApprove,
}

/// The result of one event on one roster item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The state after the event.
    pub next: State,
    /// The pre-approval flag after the event (RFC 6121 §3.4).
    pub approved: bool,
    /// What happens to the stanza.
    pub action: Action,
}

impl Outcome {
    /// Whether the roster item changed (and needs storing and pushing).
    pub fn changed(&self, before: State, approved_before: bool) -> bool {
        self.next != before || self.approved != approved_before
    }
}

/// Applies `event` to an item in `state` with pre-approval `approved`.
///
/// Routing rules on top of the tables:
/// - outbound `subscribe` and `unsubscribe` are always routed (the contact's server decides,
///   and a repeated request resynchronizes two servers that disagree);
/// - outbound `subscribed`/`unsubscribed` and all inbound stanzas are routed/delivered only
///   when the state changes, except:
/// - an inbound `subscribe` while the request is already pending is delivered again (the
///   user's client may have missed it; it stays stored once);
/// - an inbound `subscribe` when the contact already has a subscription (`from`, `both`) is
///   answered `subscribed` by the server (A.3.1), and so is one the user pre-approved, which
///   then moves the state as if the user had approved it;
/// - an outbound `subscribed` in a state without a pending request records a pre-approval
///   (§3.4) when the contact has no subscription yet; an outbound `unsubscribed` cancels one.
pub fn transition(state: State, approved: bool, event: Event) -> Outcome {
    let next = table(event).get(state.index()).copied().flatten();
    let changed = next.is_some();
    let next = next.unwrap_or(state);
    match event {
        Event::OutSubscribe | Event::OutUnsubscribe => Outcome {
            next,
            approved,
            action: Action::Forward,
        },
        Event::OutSubscribed => {
            if changed {
                // The request is approved: the pre-approval has served its purpose.
                Outcome {
                    next,
                    approved: false,
                    action: Action::Forward,
                }
            } else {
                let preapprove = matches!(state, S::None | S::NonePendingOut | S::To);
                Outcome {
                    next,
                    approved: approved || preapprove,
                    action: Action::Drop,
                }
            }
        }
        Event::OutUnsubscribed => Outcome {
            next,
            approved: false,
            action: if changed {
                Action::Forward
            } else {
                Action::Drop
            },
        },
        Event::InSubscribe => {
            if state.subscription().has_from() {
                Outcome {
                    next,
                    approved,
                    action: Action::AutoApprove,
                }
            } else if approved {
                // §3.4: pre-approved. Same effect as the user approving now.
                let next = transition(next, false, Event::OutSubscribed).next;
                Outcome {
                    next,
                    approved: false,
                    action: Action::AutoApprove,
                }
            } else {
                Outcome {
                    next,
                    approved,
                    action: Action::Forward,
                }
            }
        }
        Event::InUnsubscribe | Event::InSubscribed | Event::InUnsubscribed => Outcome {
            next,
            approved,
            action: if changed {
                Action::Forward
            } else {
                Action::Drop
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: State = S::None;
    const NO: State = S::NonePendingOut;
    const NI: State = S::NonePendingIn;
    const NOI: State = S::NonePendingOutIn;
    const T: State = S::To;
    const TI: State = S::ToPendingIn;
    const F: State = S::From;
    const FO: State = S::FromPendingOut;
    const B: State = S::Both;

    /// RFC 6121 Appendix A, one row per (event, state): the expected next state and whether
    /// the stanza goes on (route for outbound, deliver for inbound), without pre-approval.
    /// Written independently of `table()` from the RFC's prose.
    #[rustfmt::skip]
    const APPENDIX_A: &[(Event, State, State, Action)] = &[
        // A.2.1 outbound subscribe: always routed
        (Event::OutSubscribe, N, NO, Action::Forward),
        (Event::OutSubscribe, NO, NO, Action::Forward),
        (Event::OutSubscribe, NI, NOI, Action::Forward),
        (Event::OutSubscribe, NOI, NOI, Action::Forward),
        (Event::OutSubscribe, T, T, Action::Forward),
        (Event::OutSubscribe, TI, TI, Action::Forward),
        (Event::OutSubscribe, F, FO, Action::Forward),
        (Event::OutSubscribe, FO, FO, Action::Forward),
        (Event::OutSubscribe, B, B, Action::Forward),
        // A.2.2 outbound unsubscribe: always routed
        (Event::OutUnsubscribe, N, N, Action::Forward),
        (Event::OutUnsubscribe, NO, N, Action::Forward),
        (Event::OutUnsubscribe, NI, NI, Action::Forward),
        (Event::OutUnsubscribe, NOI, NI, Action::Forward),
        (Event::OutUnsubscribe, T, N, Action::Forward),
        (Event::OutUnsubscribe, TI, NI, Action::Forward),
        (Event::OutUnsubscribe, F, F, Action::Forward),
        (Event::OutUnsubscribe, FO, F, Action::Forward),
        (Event::OutUnsubscribe, B, F, Action::Forward),
        // A.2.3 outbound subscribed: routed only on a state change
        (Event::OutSubscribed, N, N, Action::Drop),
        (Event::OutSubscribed, NO, NO, Action::Drop),
        (Event::OutSubscribed, NI, F, Action::Forward),
        (Event::OutSubscribed, NOI, FO, Action::Forward),
        (Event::OutSubscribed, T, T, Action::Drop),
        (Event::OutSubscribed, TI, B, Action::Forward),
        (Event::OutSubscribed, F, F, Action::Drop),
        (Event::OutSubscribed, FO, FO, Action::Drop),
        (Event::OutSubscribed, B, B, Action::Drop),
        // A.2.4 outbound unsubscribed
        (Event::OutUnsubscribed, N, N, Action::Drop),
        (Event::OutUnsubscribed, NO, NO, Action::Drop),
        (Event::OutUnsubscribed, NI, N, Action::Forward),
        (Event::OutUnsubscribed, NOI, NO, Action::Forward),
        (Event::OutUnsubscribed, T, T, Action::Drop),
        (Event::OutUnsubscribed, TI, T, Action::Forward),
        (Event::OutUnsubscribed, F, N, Action::Forward),
        (Event::OutUnsubscribed, FO, NO, Action::Forward),
        (Event::OutUnsubscribed, B, T, Action::Forward),
        // A.3.1 inbound subscribe
        (Event::InSubscribe, N, NI, Action::Forward),
        (Event::InSubscribe, NO, NOI, Action::Forward),
        (Event::InSubscribe, NI, NI, Action::Forward),
        (Event::InSubscribe, NOI, NOI, Action::Forward),
        (Event::InSubscribe, T, TI, Action::Forward),
        (Event::InSubscribe, TI, TI, Action::Forward),
        (Event::InSubscribe, F, F, Action::AutoApprove),
        (Event::InSubscribe, FO, FO, Action::AutoApprove),
        (Event::InSubscribe, B, B, Action::AutoApprove),
        // A.3.2 inbound unsubscribe
        (Event::InUnsubscribe, N, N, Action::Drop),
        (Event::InUnsubscribe, NO, NO, Action::Drop),
        (Event::InUnsubscribe, NI, N, Action::Forward),
        (Event::InUnsubscribe, NOI, NO, Action::Forward),
        (Event::InUnsubscribe, T, T, Action::Drop),
        (Event::InUnsubscribe, TI, T, Action::Forward),
        (Event::InUnsubscribe, F, N, Action::Forward),
        (Event::InUnsubscribe, FO, NO, Action::Forward),
        (Event::InUnsubscribe, B, T, Action::Forward),
        // A.3.3 inbound subscribed
        (Event::InSubscribed, N, N, Action::Drop),
        (Event::InSubscribed, NO, T, Action::Forward),
        (Event::InSubscribed, NI, NI, Action::Drop),
        (Event::InSubscribed, NOI, TI, Action::Forward),
        (Event::InSubscribed, T, T, Action::Drop),
        (Event::InSubscribed, TI, TI, Action::Drop),
        (Event::InSubscribed, F, F, Action::Drop),
        (Event::InSubscribed, FO, B, Action::Forward),
        (Event::InSubscribed, B, B, Action::Drop),
        // A.3.4 inbound unsubscribed
        (Event::InUnsubscribed, N, N, Action::Drop),
        (Event::InUnsubscribed, NO, N, Action::Forward),
        (Event::InUnsubscribed, NI, NI, Action::Drop),
        (Event::InUnsubscribed, NOI, NI, Action::Forward),
        (Event::InUnsubscribed, T, N, Action::Forward),
        (Event::InUnsubscribed, TI, NI, Action::Forward),
        (Event::InUnsubscribed, F, F, Action::Drop),
        (Event::InUnsubscribed, FO, F, Action::Forward),
        (Event::InUnsubscribed, B, F, Action::Forward),
    ];

    #[test]
    fn appendix_a_is_complete() {
        assert_eq!(APPENDIX_A.len(), STATES.len() * EVENTS.len());
        for e in EVENTS {
            for s in STATES {
                assert!(
                    APPENDIX_A.iter().any(|(ee, ss, _, _)| *ee == e && *ss == s),
                    "missing row {e:?} {s:?}"
                );
            }
        }
    }

    #[test]
    fn appendix_a_transitions() {
        for &(event, from, to, action) in APPENDIX_A {
            let o = transition(from, false, event);
            assert_eq!(o.next, to, "{event:?} in {from:?}");
            assert_eq!(o.action, action, "{event:?} in {from:?}");
        }
    }

    #[test]
    fn states_round_trip_through_storage() {
        for s in STATES {
            assert_eq!(
                State::of(s.subscription(), s.pending_out(), s.pending_in()),
                s
            );
        }
    }

    #[test]
    fn pre_approval() {
        // §3.4: subscribed without a pending request pre-approves, when the contact has no
        // subscription yet; the pending state is unchanged and nothing is routed.
        for s in [N, NO, T] {
            let o = transition(s, false, Event::OutSubscribed);
            assert_eq!(
                (o.next, o.approved, o.action),
                (s, true, Action::Drop),
                "{s:?}"
            );
        }
        for s in [F, FO, B] {
            assert!(
                !transition(s, false, Event::OutSubscribed).approved,
                "{s:?}"
            );
        }
        // A pre-approved request is answered by the server and moves the state.
        assert_eq!(
            transition(N, true, Event::InSubscribe),
            Outcome {
                next: F,
                approved: false,
                action: Action::AutoApprove
            }
        );
        assert_eq!(transition(NO, true, Event::InSubscribe).next, FO);
        assert_eq!(transition(T, true, Event::InSubscribe).next, B);
        // unsubscribed cancels a pre-approval.
        let o = transition(N, true, Event::OutUnsubscribed);
        assert_eq!((o.next, o.approved, o.action), (N, false, Action::Drop));
        // Other events keep it.
        assert!(transition(N, true, Event::OutSubscribe).approved);
    }
}
