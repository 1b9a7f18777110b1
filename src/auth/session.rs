//! A connection's session (protocol §E1–§E3): whether it said hello, the challenge it was
//! given, and the id it is authenticated as. Owned by the connection, lent to the handlers.

use std::time::{Duration, Instant};

use crate::protocol::extension::{proof, Proof, SECRET_LEN};
use crate::protocol::{ClientId, ErrorForm};

/// What one connection has established, for as long as it is open.
#[derive(Debug, Default)]
pub struct Session {
    /// Bare until a hello: classic clients never see a reason.
    errors: ErrorForm,
    challenge: Option<Challenge>,
    authenticated: Option<ClientId>,
}

/// A challenge given on this connection, not yet answered.
#[derive(Debug)]
struct Challenge {
    id: ClientId,
    secret: [u8; SECRET_LEN],
    expires: Instant,
}

/// Why a proof was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProofFailure {
    #[error("no challenge was given on this connection, or it was used")]
    NoChallenge,
    #[error("the challenge was given for another id")]
    OtherId,
    #[error("the challenge expired")]
    Expired,
    #[error("the proof is wrong")]
    Wrong,
}

impl Session {
    /// How this connection's 9000 replies are laid out.
    pub fn errors(&self) -> ErrorForm {
        self.errors
    }

    /// A hello: from now on every 9000 carries its reason.
    pub fn greet(&mut self) {
        self.errors = ErrorForm::WithReason;
    }

    /// The id the connection has proven it holds the key of.
    pub fn authenticated(&self) -> Option<ClientId> {
        self.authenticated
    }

    /// The account it was authenticated as is gone: the connection is no longer
    /// authenticated.
    pub fn sign_out(&mut self) {
        self.authenticated = None;
    }

    /// Keeps a challenge's secret for `id` until `lifetime` from `now`, replacing any earlier
    /// one.
    pub fn challenge(
        &mut self,
        id: ClientId,
        secret: [u8; SECRET_LEN],
        now: Instant,
        lifetime: Duration,
    ) {
        self.challenge = Some(Challenge {
            id,
            secret,
            expires: now + lifetime,
        });
    }

    /// Checks a proof for `id` against the pending challenge, which it uses up, right or
    /// wrong. On success the connection is authenticated as `id`.
    pub fn prove(
        &mut self,
        id: ClientId,
        answer: &Proof,
        now: Instant,
    ) -> Result<(), ProofFailure> {
        let challenge = self.challenge.take().ok_or(ProofFailure::NoChallenge)?;
        if challenge.id != id {
            return Err(ProofFailure::OtherId);
        }
        if now >= challenge.expires {
            return Err(ProofFailure::Expired);
        }
        // Compared in full whatever differs first: the time taken tells nothing.
        let expected = proof(&challenge.secret, id);
        let differs = expected
            .iter()
            .zip(answer)
            .fold(0, |acc, (a, b)| acc | (a ^ b));
        if differs != 0 {
            return Err(ProofFailure::Wrong);
        }
        self.authenticated = Some(id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIFETIME: Duration = Duration::from_secs(30);

    fn challenged(id: ClientId, now: Instant) -> Session {
        let mut session = Session::default();
        session.challenge(id, [5; SECRET_LEN], now, LIFETIME);
        session
    }

    #[test]
    fn a_hello_makes_errors_carry_their_reason() {
        let mut session = Session::default();
        assert_eq!(session.errors(), ErrorForm::Bare);
        session.greet();
        assert_eq!(session.errors(), ErrorForm::WithReason);
    }

    #[test]
    fn the_right_proof_authenticates_once() {
        let now = Instant::now();
        let id = ClientId([1; 16]);
        let mut session = challenged(id, now);
        let right = proof(&[5; SECRET_LEN], id);
        assert_eq!(session.prove(id, &right, now), Ok(()));
        assert_eq!(session.authenticated(), Some(id));
        assert_eq!(
            session.prove(id, &right, now),
            Err(ProofFailure::NoChallenge)
        );
        assert_eq!(session.authenticated(), Some(id), "still authenticated");
        session.sign_out();
        assert_eq!(session.authenticated(), None);
    }

    #[test]
    fn wrong_late_or_misdirected_proofs_use_the_challenge_up() {
        let now = Instant::now();
        let id = ClientId([1; 16]);
        let right = proof(&[5; SECRET_LEN], id);
        let mut session = challenged(id, now);
        assert_eq!(session.prove(id, &[0; 32], now), Err(ProofFailure::Wrong));
        assert_eq!(
            session.prove(id, &right, now),
            Err(ProofFailure::NoChallenge)
        );
        let mut session = challenged(id, now);
        assert_eq!(
            session.prove(id, &right, now + LIFETIME),
            Err(ProofFailure::Expired)
        );
        let mut session = challenged(id, now);
        let other = ClientId([2; 16]);
        assert_eq!(
            session.prove(other, &proof(&[5; SECRET_LEN], other), now),
            Err(ProofFailure::OtherId)
        );
        assert_eq!(session.authenticated(), None);
    }
}
