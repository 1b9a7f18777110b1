//! The servers a client uses as one service, and the order in which it tries them.
//!
//! `--server a:1357,b:1357` or a `server.info` of several lines names nodes that share one
//! database and serve the same users, so any of them will do. Requests go to the node that
//! last worked in this process (the first at start); a node that cannot be reached is passed
//! over for the next, wrapping around once; a round in which every node failed gives up with
//! one error naming each address and why. What counts as a node's failure is
//! [`ClientError::is_connection_failure`]: any other error (the server's answer) ends the
//! round. No I/O here: the transport and the live subscription connect, this decides where.

use std::fmt;
use std::path::Path;

use super::error::ClientError;
use super::identity::{read_text, FileFormatError, ServerAddress};

/// The nodes of one service, never none, and the one to use next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Servers {
    nodes: Vec<ServerAddress>,
    current: usize,
}

impl Servers {
    /// A service of one node.
    pub fn one(server: ServerAddress) -> Servers {
        Servers {
            nodes: vec![server],
            current: 0,
        }
    }

    /// `host:port` entries separated by commas, as `--server` takes them.
    pub fn parse_list(text: &str) -> Result<Servers, FileFormatError> {
        Servers::parse_entries(text.split(','))
    }

    /// `server.info`: one `host:port` a line; blank lines are ignored, so the classic file of
    /// one line (with or without its line ending) is a service of one node.
    pub fn parse_lines(text: &str) -> Result<Servers, FileFormatError> {
        Servers::parse_entries(text.lines())
    }

    fn parse_entries<'a>(
        entries: impl Iterator<Item = &'a str>,
    ) -> Result<Servers, FileFormatError> {
        let nodes = entries
            .filter(|entry| !entry.trim().is_empty())
            .map(ServerAddress::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if nodes.is_empty() {
            return Err(FileFormatError::NoServerAddress);
        }
        Ok(Servers { nodes, current: 0 })
    }

    /// Reads `server.info`.
    pub fn load(path: &Path) -> Result<Servers, ClientError> {
        let text = read_text(path)?;
        Servers::parse_lines(&text).map_err(|source| ClientError::BadFile {
            path: path.to_owned(),
            source,
        })
    }

    /// The node to use next.
    pub fn current(&self) -> &ServerAddress {
        &self.nodes[self.current]
    }

    /// How many nodes there are.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a service has at least one node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The current node failed (its connection broke): the next one becomes current.
    pub fn advance(&mut self) {
        self.current = (self.current + 1) % self.nodes.len();
    }

    /// Runs `attempt` on each node in turn, from the current one, until one succeeds, which
    /// becomes current. A node's connection failure moves on to the next; any other error is
    /// returned at once. When every node has failed, the error names each and why (a single
    /// node's is its own error, as it was before there were several).
    pub fn try_each<T>(
        &mut self,
        mut attempt: impl FnMut(&ServerAddress) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let mut failures = Failures::default();
        for step in 0..self.nodes.len() {
            let node = (self.current + step) % self.nodes.len();
            match attempt(&self.nodes[node]) {
                Ok(value) => {
                    self.current = node;
                    return Ok(value);
                }
                Err(error) if error.is_connection_failure() => {
                    failures.add(self.nodes[node].to_string(), error)
                }
                Err(error) => return Err(error),
            }
        }
        Err(failures.give_up())
    }
}

impl fmt::Display for Servers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.nodes.iter().map(ToString::to_string).collect();
        f.write_str(&names.join(","))
    }
}

/// Why each node tried so far failed, in the order tried, with its address where known.
#[derive(Debug, Default)]
pub struct Failures(Vec<(Option<String>, ClientError)>);

impl Failures {
    /// `server` failed with `error`.
    pub fn add(&mut self, server: String, error: ClientError) {
        self.0.push((Some(server), error));
    }

    /// Adds the failure of a round ([`Servers::try_each`]): each node's, or a single node's
    /// own error (which names its address if it is a connect error).
    pub fn absorb(&mut self, error: ClientError) {
        match error {
            ClientError::EveryServerFailed(NodeFailures(failures)) => self.0.extend(failures),
            ClientError::Connect { ref server, .. } => self.0.push((Some(server.clone()), error)),
            other => self.0.push((None, other)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The error to report: the only failure as it is, or several as one
    /// [`ClientError::EveryServerFailed`].
    pub fn give_up(mut self) -> ClientError {
        if self.0.len() == 1 {
            if let Some((_, error)) = self.0.pop() {
                return error;
            }
        }
        ClientError::EveryServerFailed(NodeFailures(self.0))
    }
}

/// Several failures, shown as `a:1357 (why), b:1357 (why)`.
#[derive(Debug)]
pub struct NodeFailures(Vec<(Option<String>, ClientError)>);

impl fmt::Display for NodeFailures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (at, (server, error)) in self.0.iter().enumerate() {
            if at > 0 {
                f.write_str(", ")?;
            }
            // The address comes first: the errors' own mentions of it are left out.
            match (server, error) {
                (Some(server), ClientError::Connect { source, .. }) => {
                    write!(f, "{server} (cannot connect: {source})")?
                }
                (Some(server), ClientError::ReplyLost { cause, .. }) => {
                    write!(f, "{server} (no reply: {cause})")?
                }
                (Some(server), other) => write!(f, "{server} ({other})")?,
                (None, other) => write!(f, "{other}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn servers(text: &str) -> Servers {
        Servers::parse_lines(text).expect("valid")
    }

    fn refused(server: &ServerAddress) -> ClientError {
        ClientError::Connect {
            server: server.to_string(),
            source: io::ErrorKind::ConnectionRefused.into(),
        }
    }

    #[test]
    fn the_one_line_form_is_a_service_of_one_node() {
        for text in [
            "127.0.0.1:1357",
            "127.0.0.1:1357\n",
            "  127.0.0.1:1357 \r\n",
        ] {
            let one = servers(text);
            assert_eq!(one.len(), 1);
            assert_eq!(one.current().to_string(), "127.0.0.1:1357");
        }
    }

    #[test]
    fn several_lines_or_commas_name_several_nodes_in_order() {
        let from_file = servers("a:1\n\n  b:2\r\n\n[::1]:3\n");
        assert_eq!(from_file.to_string(), "a:1,b:2,[::1]:3");
        let from_option = Servers::parse_list("a:1, b:2,[::1]:3").expect("valid");
        assert_eq!(from_option, from_file);
    }

    #[test]
    fn a_bad_entry_is_named_and_no_entry_is_refused() {
        let error = Servers::parse_list("a:1,b").expect_err("b has no port");
        assert_eq!(
            error.to_string(),
            "\"b\" is not host:port (e.g. 127.0.0.1:1357)"
        );
        for empty in ["", "\n\n", " , "] {
            assert!(
                matches!(
                    Servers::parse_lines(empty).or_else(|_| Servers::parse_list(empty)),
                    Err(FileFormatError::NoServerAddress)
                ),
                "{empty:?}"
            );
        }
    }

    #[test]
    fn failures_move_on_wrapping_around_once_and_the_one_that_worked_stays_current() {
        let mut nodes = servers("a:1\nb:2\nc:3");
        let mut tried = Vec::new();
        let worked = nodes.try_each(|server| {
            tried.push(server.to_string());
            match server.port {
                3 => Ok(server.port),
                _ => Err(refused(server)),
            }
        });
        assert_eq!(worked.expect("c answers"), 3);
        assert_eq!(tried, ["a:1", "b:2", "c:3"]);
        assert_eq!(nodes.current().to_string(), "c:3");

        // The next round starts where the last one ended, and wraps around.
        nodes.advance();
        tried.clear();
        let worked = nodes.try_each(|server| {
            tried.push(server.to_string());
            match server.port {
                2 => Ok(server.port),
                _ => Err(refused(server)),
            }
        });
        assert_eq!(worked.expect("b answers"), 2);
        assert_eq!(tried, ["a:1", "b:2"]);
    }

    #[test]
    fn a_round_where_every_node_failed_names_each_and_why() {
        let mut nodes = servers("a:1\nb:2");
        nodes.advance();
        let error = nodes
            .try_each(|server| -> Result<(), _> {
                match server.port {
                    1 => Err(refused(server)),
                    _ => Err(ClientError::Timeout(30)),
                }
            })
            .expect_err("none answers");
        assert_eq!(
            error.to_string(),
            "every server failed: b:2 (the server did not answer within 30 seconds), \
             a:1 (cannot connect: connection refused)"
        );
        assert!(error.is_connection_failure());

        let mut one = servers("a:1");
        let error = one.try_each(|server| -> Result<(), _> { Err(refused(server)) });
        assert_eq!(
            error.expect_err("refused").to_string(),
            "cannot connect to a:1: connection refused",
            "one node's failure is reported as before"
        );
    }

    #[test]
    fn an_answer_that_is_no_connection_failure_ends_the_round() {
        let mut nodes = servers("a:1\nb:2");
        let mut tried = 0;
        let error = nodes
            .try_each(|_| -> Result<(), _> {
                tried += 1;
                Err(ClientError::LoginFailed)
            })
            .expect_err("refused");
        assert!(matches!(error, ClientError::LoginFailed));
        assert_eq!(tried, 1);
    }
}
