//! Affiliations (long-lived, per bare JID) and roles (per visit), XEP-0045 §5, and what each
//! may do (§5.1.2 and §5.2.1, as tables).

/// A long-lived relation of a bare JID to a room (§5.2), most powerful first in `Ord`
/// reversed: `Owner > Admin > Member > None > Outcast`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Affiliation {
    /// Banned: may not enter.
    Outcast,
    /// No affiliation.
    None,
    /// A member (may enter a members-only room).
    Member,
    /// A room administrator.
    Admin,
    /// A room owner.
    Owner,
}

impl Affiliation {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Affiliation::Outcast => "outcast",
            Affiliation::None => "none",
            Affiliation::Member => "member",
            Affiliation::Admin => "admin",
            Affiliation::Owner => "owner",
        }
    }

    /// Parses the wire value.
    pub fn parse(s: &str) -> Option<Affiliation> {
        Some(match s {
            "outcast" => Affiliation::Outcast,
            "none" => Affiliation::None,
            "member" => Affiliation::Member,
            "admin" => Affiliation::Admin,
            "owner" => Affiliation::Owner,
            _ => return None,
        })
    }

    /// Admins and owners (§5.2: they moderate by virtue of their affiliation).
    pub fn is_admin(self) -> bool {
        self >= Affiliation::Admin
    }
}

/// The role of an occupant during one visit (§5.1), most powerful last in `Ord`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Not in the room (the role of a leaving or kicked occupant).
    None,
    /// In the room without voice.
    Visitor,
    /// In the room with voice.
    Participant,
    /// A moderator.
    Moderator,
}

impl Role {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::None => "none",
            Role::Visitor => "visitor",
            Role::Participant => "participant",
            Role::Moderator => "moderator",
        }
    }

    /// Parses the wire value.
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "none" => Role::None,
            "visitor" => Role::Visitor,
            "participant" => Role::Participant,
            "moderator" => Role::Moderator,
            _ => return None,
        })
    }

    /// The role an occupant with `affiliation` gets on entering (§5.1.1): owners and
    /// admins moderate, members speak, others speak unless the room is moderated.
    pub fn default_for(affiliation: Affiliation, moderated: bool) -> Role {
        match affiliation {
            Affiliation::Owner | Affiliation::Admin => Role::Moderator,
            Affiliation::Member => Role::Participant,
            Affiliation::None if moderated => Role::Visitor,
            Affiliation::None => Role::Participant,
            Affiliation::Outcast => Role::None,
        }
    }

    /// Whether the occupant may send groupchat messages (§5.1.2: visitors may not).
    pub fn has_voice(self) -> bool {
        self >= Role::Participant
    }
}

/// Whether an occupant of `actor` affiliation and role may give the occupant of `target`
/// affiliation the role `new`: only moderators change roles, never of someone more
/// affiliated (§8.2: a kick by a moderator of lower affiliation is refused, so an owner may
/// kick an admin); voice is not revoked from anyone at or above the moderator's own
/// affiliation (§8.4), and admins and owners keep voice and moderation whoever asks (§8.4,
/// §9.7); only admins and owners grant or revoke moderation (§9.6, §9.7).
pub fn may_set_role(
    actor: (Affiliation, Role),
    target: Affiliation,
    target_role: Role,
    new: Role,
) -> bool {
    let (aff, role) = actor;
    if role != Role::Moderator || target > aff {
        return false;
    }
    if new == Role::Visitor && target >= aff {
        return false;
    }
    if target.is_admin() && matches!(new, Role::Visitor | Role::Participant) {
        return false;
    }
    if new == Role::Moderator || target_role == Role::Moderator {
        return aff.is_admin();
    }
    true
}

/// Whether `actor` may change an affiliation from `old` to `new` (§9: admins manage members
/// and outcasts below them; §10: owners manage everything).
pub fn may_set_affiliation(actor: Affiliation, old: Affiliation, new: Affiliation) -> bool {
    match actor {
        Affiliation::Owner => true,
        Affiliation::Admin => old < Affiliation::Admin && new < Affiliation::Admin,
        _ => false,
    }
}

/// Whether `actor` may read the list of `list` affiliations (§9.5, §10.5, §10.8). In a
/// members-only room where everyone sees real JIDs (`members_see_members`), a member may see
/// who else belongs (§9.5 lets the service show members the list; there it reveals no more
/// than the room's presence does, and clients encrypting to every member, as OMEMO in
/// private groups, need the member, admin and owner lists).
pub fn may_read_list(actor: Affiliation, list: Affiliation, members_see_members: bool) -> bool {
    if members_see_members && actor >= Affiliation::Member && list >= Affiliation::Member {
        return true;
    }
    match list {
        Affiliation::Owner | Affiliation::Admin => actor == Affiliation::Owner,
        _ => actor.is_admin(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Affiliation as A;

    #[test]
    fn wire_values_round_trip() {
        for a in [A::Outcast, A::None, A::Member, A::Admin, A::Owner] {
            assert_eq!(Affiliation::parse(a.as_str()), Some(a));
        }
        for r in [
            Role::None,
            Role::Visitor,
            Role::Participant,
            Role::Moderator,
        ] {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("king"), None);
    }

    #[test]
    fn privileges() {
        let moderator = (A::None, Role::Moderator);
        let admin = (A::Admin, Role::Moderator);
        // Moderators kick and manage voice of the unaffiliated, not of admins.
        assert!(may_set_role(
            moderator,
            A::None,
            Role::Participant,
            Role::None
        ));
        assert!(!may_set_role(
            moderator,
            A::Member,
            Role::Participant,
            Role::Visitor
        ));
        assert!(!may_set_role(
            moderator,
            A::Admin,
            Role::Moderator,
            Role::None
        ));
        assert!(!may_set_role(
            moderator,
            A::None,
            Role::Participant,
            Role::Moderator
        ));
        assert!(may_set_role(
            admin,
            A::None,
            Role::Participant,
            Role::Moderator
        ));
        assert!(!may_set_role(admin, A::Owner, Role::Moderator, Role::None));
        // §8.2: an owner kicks an admin; §8.4: nobody silences an admin, and a moderator
        // silences only those below its own affiliation.
        let owner = (A::Owner, Role::Moderator);
        assert!(may_set_role(owner, A::Admin, Role::Moderator, Role::None));
        assert!(!may_set_role(
            owner,
            A::Admin,
            Role::Moderator,
            Role::Visitor
        ));
        assert!(!may_set_role(
            admin,
            A::Admin,
            Role::Moderator,
            Role::Visitor
        ));
        assert!(!may_set_role(
            moderator,
            A::None,
            Role::Participant,
            Role::Visitor
        ));
        assert!(may_set_role(
            admin,
            A::Member,
            Role::Participant,
            Role::Visitor
        ));
        assert!(!may_set_role(
            (A::Member, Role::Participant),
            A::None,
            Role::Participant,
            Role::None
        ));
        // Admins manage members and outcasts; owners everything.
        assert!(may_set_affiliation(A::Admin, A::None, A::Outcast));
        assert!(!may_set_affiliation(A::Admin, A::Admin, A::None));
        assert!(!may_set_affiliation(A::Admin, A::None, A::Admin));
        assert!(may_set_affiliation(A::Owner, A::Admin, A::Owner));
        assert!(!may_set_affiliation(A::Member, A::None, A::Member));
        assert!(may_read_list(A::Admin, A::Member, false));
        assert!(!may_read_list(A::Admin, A::Owner, false));
        assert!(!may_read_list(A::Member, A::Member, false));
        // Members of a members-only non-anonymous room see who belongs, not who is banned.
        assert!(may_read_list(A::Member, A::Owner, true));
        assert!(!may_read_list(A::Member, A::Outcast, true));
        assert!(!may_read_list(A::None, A::Member, true));
    }
}
