//! Scopes and the principal a request acts as.

use std::sync::Arc;

pub use crate::domain::ClientId;
use crate::domain::OwnerId;

/// What a client may do. Deposits, withdrawals and `/v1/admin` need the admin token, never a scope.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub enum Scope {
    /// Submit transfers (`POST /v1/transfers`).
    #[serde(rename = "transfers:write")]
    TransfersWrite,
    /// Read transfers (`GET /v1/transfers/{id}`).
    #[serde(rename = "transfers:read")]
    TransfersRead,
    /// Open accounts and replace their metadata (`POST /v1/accounts`, `PATCH /v1/accounts/{owner_id}/{currency}`).
    #[serde(rename = "accounts:write")]
    AccountsWrite,
    /// Read balances and an account's transfers.
    #[serde(rename = "accounts:read")]
    AccountsRead,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::TransfersWrite, Scope::TransfersRead, Scope::AccountsWrite, Scope::AccountsRead];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::TransfersWrite => "transfers:write",
            Self::TransfersRead => "transfers:read",
            Self::AccountsWrite => "accounts:write",
            Self::AccountsRead => "accounts:read",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of scopes.
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub struct Scopes(u8);

impl Scopes {
    pub fn all() -> Self {
        Scope::ALL.into_iter().collect()
    }

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        Self(iter.into_iter().fold(0, |bits, s| bits | s.bit()))
    }
}

/// Who a request acts as, once its credential is verified.
#[derive(Clone, Debug)]
pub struct Principal {
    /// `None` for the admin token.
    pub client_id: Option<ClientId>,
    pub scopes: Scopes,
    /// `None`: may act for any owner (the admin token, a trusted back-end).
    /// `Some`: only for these owners, sorted.
    pub owners: Option<Arc<[OwnerId]>>,
}

impl Principal {
    /// The admin token: unbound, with every scope.
    pub fn admin() -> Self {
        Self { client_id: None, scopes: Scopes::all(), owners: None }
    }

    pub fn is_admin(&self) -> bool {
        self.client_id.is_none()
    }

    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(scope)
    }

    /// May this principal move, open or read what belongs to `owner`?
    pub fn may_act_for(&self, owner: OwnerId) -> bool {
        self.owners.as_ref().is_none_or(|owners| owners.binary_search(&owner).is_ok())
    }

    /// May it read a transfer between these two owners (as either party)?
    pub fn may_see_transfer(&self, sender: OwnerId, receiver: OwnerId) -> bool {
        self.may_act_for(sender) || self.may_act_for(receiver)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(id: i64) -> OwnerId {
        OwnerId::new(id).unwrap()
    }

    #[test]
    fn scopes_read_and_write_their_stable_names() {
        for scope in Scope::ALL {
            assert_eq!(Scope::parse(scope.as_str()), Some(scope));
            assert_eq!(serde_json::to_value(scope).unwrap(), serde_json::json!(scope.as_str()));
        }
        assert_eq!(Scope::parse("transfers:*"), None);
        let some: Scopes = [Scope::TransfersRead, Scope::AccountsRead].into_iter().collect();
        assert!(some.contains(Scope::TransfersRead) && !some.contains(Scope::TransfersWrite));
        assert_eq!(some.iter().collect::<Vec<_>>(), vec![Scope::TransfersRead, Scope::AccountsRead]);
    }

    #[test]
    fn a_bound_client_acts_only_for_its_owners_and_sees_transfers_it_is_party_to() {
        let bound =
            Principal { client_id: Some(ClientId::generate()), scopes: Scopes::all(), owners: Some(vec![owner(2), owner(5)].into()) };
        assert!(bound.may_act_for(owner(2)) && bound.may_act_for(owner(5)));
        assert!(!bound.may_act_for(owner(3)));
        assert!(bound.may_see_transfer(owner(3), owner(5)));
        assert!(!bound.may_see_transfer(owner(3), owner(4)));
        assert!(Principal::admin().may_act_for(owner(3)) && Principal::admin().is_admin());
    }
}
