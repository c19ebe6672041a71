//! Why a room refuses something, mapped once to the XEP-0045 error of each case (§7.2,
//! §7.4, §7.5, §8–§10, and the table of §19.1.2).

use rookery_proto::{ErrorType, StanzaError, StanzaErrorCondition as C};

/// A refusal, named by its cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MucError {
    /// No nickname, or one the PRECIS nickname profile rejects (§7.2.1: `jid-malformed`).
    #[error("invalid nickname")]
    InvalidNick,
    /// The nickname is in use or reserved by someone else (§7.2.9: `conflict`).
    #[error("nickname in use")]
    NickConflict,
    /// The user is banned (§7.2.7: `forbidden`).
    #[error("you are banned from this room")]
    Banned,
    /// A members-only room and the user is not a member (§7.2.6: `registration-required`).
    #[error("this room is members-only")]
    MembersOnly,
    /// Missing or wrong password (§7.2.5: `not-authorized`).
    #[error("a password is required")]
    Password,
    /// The room is full (§7.2.10: `service-unavailable`).
    #[error("the room is full")]
    Full,
    /// The room does not exist or is locked (§7.2.11, §10.1.1: `item-not-found`).
    #[error("no such room")]
    NoRoom,
    /// The sender is not in the room (§7.4: `not-acceptable`).
    #[error("you are not in this room")]
    NotOccupant,
    /// An IQ to an occupant JID from someone not joined to the room, or for a room that
    /// does not exist (XEP-0410 §3.2: `not-acceptable`, `cancel`; a self-pinging client
    /// rejoins on it).
    #[error("you are not joined to this room")]
    NotJoined,
    /// The addressed occupant or item does not exist (`item-not-found`).
    #[error("no such occupant")]
    NoOccupant,
    /// The sender's role or affiliation does not allow it (`forbidden`).
    #[error("{0}")]
    Forbidden(&'static str),
    /// The action is not allowed on that target (§8, §9: `not-allowed`).
    #[error("{0}")]
    NotAllowed(&'static str),
    /// Removing the last owner (§10.6: `conflict`).
    #[error("a room needs an owner")]
    LastOwner,
    /// An admin or owner banning themself (§9.1: `conflict`).
    #[error("you may not ban yourself")]
    SelfBan,
    /// A request the room does not support: an IQ of another namespace (RFC 6120
    /// §8.3.3.19, XEP-0045 §7.10 for registration: `service-unavailable`).
    #[error("the room does not support this request")]
    UnsupportedIq,
    /// A disco node the room describes only by saying so (§17.1.2 `#traffic`:
    /// `feature-not-implemented`).
    #[error("the room does not support this node")]
    UnsupportedNode,
    /// A disco node the room does not have (XEP-0030 §3.1: `item-not-found`).
    #[error("no such node")]
    NoNode,
    /// An available presence without the MUC extension from a full JID not in the room:
    /// answered with a kick (§7.2 "Groupchat 1.0 Protocol"), not an error; `not-acceptable`
    /// on the wire only if it ever needed one.
    #[error("you are not in this room")]
    Desynchronized,
    /// Malformed request (`bad-request`).
    #[error("{0}")]
    BadRequest(&'static str),
    /// The user may create no more rooms (`not-allowed`, as for any refused creation).
    #[error("room creation limit reached")]
    CreationLimit,
    /// A text longer than the service keeps (a room name, description, subject or reason;
    /// see [`bounded`]): `not-acceptable` — §10.1.2's condition for configuration values
    /// that violate service policies, and RFC 6120 §8.3.3.13's for a request that does not
    /// meet the server's criteria.
    #[error("{0} is too long")]
    TooLong(&'static str),
    /// The room's affiliation list is full (`[muc] max_affiliations`): `resource-constraint`
    /// (RFC 6120 §8.3.3.18, as for a full roster: the room's storage is spent; XEP-0045
    /// names no condition for it).
    #[error("the room's affiliation list is full")]
    AffiliationsFull,
    /// The change could not be stored (`internal-server-error`).
    #[error("storage failed")]
    Store,
}

impl From<MucError> for StanzaError {
    fn from(e: MucError) -> StanzaError {
        let (condition, ty) = match &e {
            MucError::InvalidNick => (C::JidMalformed, ErrorType::Modify),
            MucError::NickConflict => (C::Conflict, ErrorType::Cancel),
            MucError::Banned => (C::Forbidden, ErrorType::Auth),
            MucError::MembersOnly => (C::RegistrationRequired, ErrorType::Auth),
            MucError::Password => (C::NotAuthorized, ErrorType::Auth),
            MucError::Full => (C::ServiceUnavailable, ErrorType::Wait),
            MucError::NoRoom | MucError::NoOccupant | MucError::NoNode => {
                (C::ItemNotFound, ErrorType::Cancel)
            }
            MucError::UnsupportedIq => (C::ServiceUnavailable, ErrorType::Cancel),
            MucError::UnsupportedNode => (C::FeatureNotImplemented, ErrorType::Cancel),
            MucError::NotOccupant | MucError::Desynchronized => {
                (C::NotAcceptable, ErrorType::Modify)
            }
            MucError::NotJoined => (C::NotAcceptable, ErrorType::Cancel),
            MucError::Forbidden(_) => (C::Forbidden, ErrorType::Auth),
            MucError::NotAllowed(_) => (C::NotAllowed, ErrorType::Cancel),
            MucError::LastOwner | MucError::SelfBan => (C::Conflict, ErrorType::Cancel),
            MucError::BadRequest(_) => (C::BadRequest, ErrorType::Modify),
            MucError::CreationLimit => (C::NotAllowed, ErrorType::Cancel),
            MucError::TooLong(_) => (C::NotAcceptable, ErrorType::Modify),
            MucError::AffiliationsFull => (C::ResourceConstraint, ErrorType::Wait),
            MucError::Store => (C::InternalServerError, ErrorType::Wait),
        };
        StanzaError::new(condition)
            .with_type(ty)
            .with_text(e.to_string())
    }
}

/// `text` if it is at most `max` bytes, else [`MucError::TooLong`] naming `what`: the texts a
/// room keeps (in memory and, for a persistent room, in the store) and sends to every
/// newcomer are bounded, not just by the stanza size.
pub(crate) fn bounded(text: &str, max: usize, what: &'static str) -> Result<(), MucError> {
    if text.len() > max {
        return Err(MucError::TooLong(what));
    }
    Ok(())
}
