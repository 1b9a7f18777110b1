//! End-to-end tests of `messageu-client`: the real binary, in temporary folders, against a
//! real server on a loopback port (or a fake one that misbehaves).

#[path = "../../tests/common/mod.rs"]
mod common;
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{assert_names_itself, TestServer};
use messageu_protocol::{Extension, ReplyHeader, RequestHeader, REQUEST_HEADER_LEN};
use serde_json::Value;
use support::{keyed_pair, message, run_bounded, User, CLIENT_DEADLINE, VECTORS};

const TEXT: &str = "Hi bob, this is alice: several 16-byte blocks & a partial one!";
const REPLY: &str = "Hello alice, bob here.";
/// A few MiB, not a whole number of AES blocks.
const FILE_LEN: usize = 3 * 1024 * 1024 + 5;

/// alice and bob go through the whole protocol with the given edition and connection mode.
fn conversation(edition: &str, mode: &[&str]) {
    let server = TestServer::start();
    let alice = User::new(server.addr, edition, mode);
    let bob = User::new(server.addr, edition, mode);

    assert!(alice
        .ok(&["register", "alice"])
        .starts_with("Registered as alice"));
    assert!(bob
        .ok(&["register", "bob"])
        .starts_with("Registered as bob"));
    assert!(alice
        .fails(&["register", "alice2"])
        .contains("already registered"));
    assert_eq!(alice.ok(&["list"]), "bob\n");
    assert_eq!(bob.ok(&["list"]), "alice\n");
    alice.ok(&["get-key", "bob"]);
    bob.ok(&["get-key", "alice"]);

    bob.ok(&["request-key", "alice"]);
    assert_eq!(
        alice.ok(&["pull"]),
        message("bob", "Request for symmetric key")
    );
    alice.ok(&["send-key", "bob"]);
    alice.ok(&["send-text", "bob", TEXT]);
    let file: Vec<u8> = (0..FILE_LEN).map(|i| (i * 7 % 256) as u8).collect();
    let file_path = alice.dir.path().join("photo.bin");
    std::fs::write(&file_path, &file).expect("file to send");
    alice.ok(&["send-file", "bob", file_path.to_str().expect("UTF-8 path")]);

    let pulled: Vec<Value> = bob
        .ok(&["pull", "--json"])
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect();
    assert_eq!(pulled.len(), 3, "{pulled:?}");
    assert!(pulled
        .iter()
        .all(|m| m["from"] == "alice" && m["decrypted"] == true));
    let types: Vec<_> = pulled.iter().map(|m| m["type"].as_u64()).collect();
    assert_eq!(types, [Some(2), Some(3), Some(4)]);
    assert_eq!(pulled[1]["content"], TEXT);
    let saved = Path::new(pulled[2]["content"].as_str().expect("a path"));
    let name = format!("alice-{}", pulled[2]["message_id"]);
    assert_eq!(saved, bob.dir.path().join("downloads").join(name));
    let received = std::fs::read(saved).expect("saved file");
    assert!(received == file, "the file arrived changed");
    assert_eq!(bob.ok(&["pull"]), "");

    bob.ok(&["send-text", "alice", REPLY]);
    assert_eq!(alice.ok(&["pull"]), message("bob", REPLY));
}

macro_rules! conversations {
    ($($name:ident: $edition:literal $(, $option:literal)?;)*) => {$(
        #[test]
        fn $name() {
            conversation($edition, &[$($option)?]);
        }
    )*};
}

conversations! {
    conversation_2021_persistent: "2021";
    conversation_2021_padded: "2021", "--padded";
    conversation_2021_reconnect: "2021", "--reconnect";
    conversation_2022_persistent: "2022";
    conversation_2022_padded: "2022", "--padded";
    conversation_2022_reconnect: "2022", "--reconnect";
    conversation_2025_persistent: "2025";
    conversation_2025_padded: "2025", "--padded";
    conversation_2025_reconnect: "2025", "--reconnect";
    conversation_2026_persistent: "2026";
    conversation_2026_padded: "2026", "--padded";
    conversation_2026_reconnect: "2026", "--reconnect";
}

/// The text flow through the menu, typed on piped standard input; `scale` is 1 for the 2021
/// numbering (10…53) and 0 for 110…153.
fn console_conversation(edition: &str, mode: &[&str]) {
    let number = |n: u16| {
        let number = if edition == "2021" { n } else { n + 100 };
        number.to_string()
    };
    let [register, list, get_key, pull, text, _, send_key, _] =
        [10, 20, 30, 40, 50, 51, 52, 53].map(number);
    let server = TestServer::start();
    let alice = User::new(server.addr, edition, mode);
    let bob = User::new(server.addr, edition, mode);
    let carol = User::new(server.addr, edition, mode);

    let output = bob.console(&format!("{register}\nbob\n0\n"));
    assert!(output.contains("Registered as bob"), "{output}");

    let output = alice.console(&format!(
        "{register}\nalice\n{list}\n{get_key}\nbob\n{send_key}\nbob\n{text}\nbob\n{TEXT}\n0\n"
    ));
    for expected in [
        "Registered as alice",
        "\nbob\n",
        "Public key of bob received",
        "Symmetric key sent to bob",
        "sent to bob",
    ] {
        assert!(output.contains(expected), "{expected:?} missing: {output}");
    }

    let output = bob.console(&format!("{pull}\n{register}\n0\n"));
    let messages = format!(
        "{}\n{}",
        message("alice", "symmetric key received"),
        message("alice", TEXT)
    );
    assert!(output.contains(&messages), "{output}");
    assert!(output.contains("already registered"), "{output}");

    let output = carol.console(&format!("{register}\nalice\n0\n"));
    assert!(
        output.contains("server responded with an error"),
        "{output}"
    );
}

#[test]
fn console_conversation_2025() {
    console_conversation("2025", &[]);
}

#[test]
fn console_conversation_2021_padded() {
    console_conversation("2021", &["--padded"]);
}

/// A server that answers each request on one connection with the next of `replies`, and
/// closes when it has none left for a request it read.
fn fake_server(replies: Vec<Vec<u8>>) -> (SocketAddr, JoinHandle<Vec<usize>>) {
    fake_server_connections(vec![replies])
}

/// [`fake_server`] for a client that connects once for each of `connections`, each the
/// replies given on that connection. Returns how many requests each connection read.
fn fake_server_connections(connections: Vec<Vec<Vec<u8>>>) -> (SocketAddr, JoinHandle<Vec<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    listener.set_nonblocking(true).expect("non-blocking");
    let thread = thread::spawn(move || {
        let mut counts = Vec::new();
        for replies in connections {
            let Some(stream) = accept_within(&listener, common::IO_TIMEOUT) else {
                break;
            };
            counts.push(serve_fake(stream, replies));
        }
        counts
    });
    (addr, thread)
}

fn accept_within(listener: &TcpListener, timeout: Duration) -> Option<TcpStream> {
    let deadline = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).expect("blocking");
                return Some(stream);
            }
            Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
            Err(_) => return None,
        }
    }
}

/// Answers the requests read on `stream` with `replies`; returns how many it read. Like any
/// classic server, it answers a hello (protocol §E2) with a bare 9000, not counted.
fn serve_fake(mut stream: TcpStream, replies: Vec<Vec<u8>>) -> usize {
    stream
        .set_read_timeout(Some(common::IO_TIMEOUT))
        .expect("timeout");
    let mut replies = replies.into_iter();
    let mut requests = 0;
    loop {
        // Reading each request whole means closing never resets the connection.
        let mut header = [0; REQUEST_HEADER_LEN];
        if stream.read_exact(&mut header).is_err() {
            return requests;
        }
        let header = RequestHeader::parse(&header);
        let mut payload = vec![0; header.payload_size as usize];
        if stream.read_exact(&mut payload).is_err() {
            return requests;
        }
        if header.code == Extension::Hello.to_wire() {
            if stream.write_all(&whole(9000, &[])).is_err() {
                return requests;
            }
            continue;
        }
        requests += 1;
        match replies.next() {
            Some(reply) if stream.write_all(&reply).is_ok() => {}
            _ => return requests,
        }
    }
}

fn reply(code: u16, declared: u32, payload: &[u8]) -> Vec<u8> {
    let mut bytes = ReplyHeader {
        version: 2,
        code,
        payload_size: declared,
    }
    .encode()
    .to_vec();
    bytes.extend_from_slice(payload);
    bytes
}

fn whole(code: u16, payload: &[u8]) -> Vec<u8> {
    reply(code, payload.len() as u32, payload)
}

/// A pull reply payload with one message whose content is cut short.
fn truncated_pull() -> Vec<u8> {
    let mut payload = vec![1; 16];
    payload.extend_from_slice(&1u32.to_le_bytes());
    payload.push(3);
    payload.extend_from_slice(&32u32.to_le_bytes());
    payload.extend_from_slice(&[0; 10]);
    payload
}

/// Runs `args` against a fake server sending `replies`; the client must fail with `expected`.
fn refuses_malformed(args: &[&str], replies: Vec<Vec<u8>>, expected: &str) {
    let (addr, server) = fake_server(replies);
    let user = User::new(addr, "2025", &[]);
    if args[0] != "register" {
        user.use_me_info_of("alice");
    }
    let error = user.fails(args);
    assert!(error.contains(expected), "{args:?}: {error}");
    let me_info = user.dir.path().join("me.info");
    assert_eq!(
        me_info.exists(),
        args[0] != "register",
        "a failed registration leaves none"
    );
    server.join().expect("fake server");
}

#[test]
fn malformed_replies_are_one_line_errors_never_panics() {
    let register = ["register", "x"];
    refuses_malformed(
        &register,
        vec![whole(2101, &[7; 16])],
        "code 2101, expected 2100",
    );
    refuses_malformed(
        &register,
        vec![whole(2100, &[7; 10])],
        "10 bytes, expected 16",
    );
    refuses_malformed(
        &register,
        vec![reply(2100, 16, &[7; 5])],
        "closed the connection",
    );
    refuses_malformed(&register, vec![], "closed the connection");
    refuses_malformed(
        &register,
        vec![whole(9000, &[])],
        "server responded with an error",
    );
    refuses_malformed(&["list"], vec![whole(2101, &[1; 100])], "a multiple of 271");
    refuses_malformed(
        &["list"],
        vec![whole(2101, &[b'x'; 271])],
        "no terminating NUL",
    );
    refuses_malformed(&["pull"], vec![whole(2104, &truncated_pull())], "cut short");

    let mut listed_bob = vec![2; 16];
    listed_bob.extend_from_slice(b"bob");
    listed_bob.resize(271, 0);
    let list = whole(2101, &listed_bob);
    let get_key = ["get-key", "bob"];
    let garbage_key = whole(2102, &[2; 176]);
    refuses_malformed(&get_key, vec![list.clone(), garbage_key], "not X.509");
    let other_client = whole(2102, &[3; 176]);
    refuses_malformed(
        &get_key,
        vec![list.clone(), other_client],
        "the request was for",
    );
    let short_sent = whole(2103, &[2; 19]);
    refuses_malformed(
        &["request-key", "bob"],
        vec![list, short_sent],
        "19 bytes, expected 20",
    );
}

#[test]
fn a_file_too_large_for_one_message_is_refused_before_connecting() {
    let unused: SocketAddr = ([127, 0, 0, 1], 9).into();
    let user = User::new(unused, "2025", &[]);
    user.use_me_info_of("alice");
    let huge = user.dir.path().join("huge.bin");
    let file = std::fs::File::create(&huge).expect("file");
    file.set_len(u64::from(u32::MAX)).expect("sparse file");
    let error = user.fails(&["send-file", "bob", huge.to_str().expect("UTF-8 path")]);
    assert!(error.contains("more than one message can carry"), "{error}");
}

#[test]
fn pull_wait_prints_a_message_sent_while_it_waits() {
    let server = TestServer::start();
    let (alice, bob) = keyed_pair(&server);
    // Something waits (alice's key): answered at once.
    let started = Instant::now();
    assert!(bob.ok(&["pull", "--wait", "20"]).starts_with("From: alice"));
    assert!(started.elapsed() < Duration::from_secs(10));
    let waiting = thread::spawn(move || bob.ok(&["pull", "--wait", "20"]));
    thread::sleep(Duration::from_millis(500));
    let sent_at = Instant::now();
    alice.ok(&["send-text", "bob", "are you there?"]);
    let printed = waiting.join().expect("the waiting pull");
    assert!(
        sent_at.elapsed() < Duration::from_secs(10),
        "woken, not timed out"
    );
    assert_eq!(printed, message("alice", "are you there?"));
}

#[test]
fn watch_and_chat_on_a_classic_server_say_it_in_one_line() {
    for command in [&["watch"][..], &["watch", "--json"], &["chat", "bob"]] {
        let name = command[0];
        let expected = format!(
            "{name} needs a server with push delivery (MessageU extensions); this server is classic"
        );
        refuses_malformed(command, vec![], &expected);
    }
}

#[test]
fn pull_wait_on_a_classic_server_says_it_cannot_wait() {
    // The hello is answered with a bare 9000: a classic server.
    let classic = vec![reply(9000, 0, &[])];
    refuses_malformed(&["pull", "--wait", "5"], classic, "pull without --wait");
}

#[test]
fn a_file_the_server_refuses_is_reported_as_its_error_reply() {
    for linger in [Duration::ZERO, Duration::from_secs(2)] {
        let server = TestServer::start_with(|config| {
            config.max_payload = 1 << 20;
            config.linger = linger;
        });
        let (alice, bob) = keyed_pair(&server);
        let path = alice.dir.path().join("big.bin");
        std::fs::write(&path, vec![1; 8 << 20]).expect("file to send");
        let error = alice.fails(&["send-file", "bob", path.to_str().expect("UTF-8 path")]);
        assert!(
            error.contains("server responded with an error"),
            "{linger:?}: {error}"
        );
        alice.ok(&["send-text", "bob", TEXT]);
        let pulled = bob.ok(&["pull"]);
        assert!(pulled.ends_with(&message("alice", TEXT)), "{pulled}");
    }
}

fn vector_json(name: &str) -> Value {
    let path = Path::new(VECTORS).join(name);
    serde_json::from_slice(&std::fs::read(path).expect("vector file")).expect("JSON")
}

fn hex(value: &Value) -> Vec<u8> {
    let text = value.as_str().expect("hex string");
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).expect("hex digits"))
        .collect()
}

/// The captured replies of the real session, replayed to our binary holding the real
/// `me.info` files: `pull`, then the list the client fetches to name the sender. The user is
/// returned with the output, since it holds the files received.
fn replay_pull(who: &str, args: &[&str]) -> (String, User) {
    let vectors = vector_json("vectors.json");
    let list_reply = vector_json("session-capture.json")
        .as_array()
        .expect("frames")
        .iter()
        .find(|frame| frame["who"] == who && frame["what"] == "client list")
        .map(|frame| hex(&frame["hex"]))
        .expect("captured list reply");
    let pull_reply = hex(&vectors[format!("pull_reply_to_{who}")]);
    let (addr, server) = fake_server(vec![pull_reply, list_reply]);
    let user = User::new(addr, "2025", &[]);
    user.use_me_info_of(who);
    let output = user.ok(args);
    server.join().expect("fake server");
    (output, user)
}

#[test]
fn messages_of_the_cpp_and_python_clients_are_read_with_their_own_me_info() {
    let vectors = vector_json("vectors.json");
    let cpp_output = vectors["bob_to_alice"]["cpp_console_output"]
        .as_str()
        .expect("text")
        // §6's wording; the C++ client capitalizes it.
        .replace("Symmetric key received", "symmetric key received");
    assert_eq!(replay_pull("alice", &["pull"]).0, cpp_output);

    let (pulled, _bob) = replay_pull("bob", &["pull", "--json"]);
    let pulled: Vec<Value> = pulled
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON"))
        .collect();
    let contents: Vec<_> = pulled.iter().map(|m| m["content"].clone()).collect();
    let to_bob = &vectors["alice_to_bob"];
    assert_eq!(
        contents[..4],
        [
            Value::from("Request for symmetric key"),
            Value::from("symmetric key received"),
            to_bob["type3_text"]["plaintext_text"].clone(),
            to_bob["type3_text_32_bytes"]["plaintext_text"].clone(),
        ]
    );
    let saved = Path::new(contents[4].as_str().expect("a path"));
    let file = std::fs::read(saved).expect("saved file");
    let expected = std::fs::read(Path::new(VECTORS).join("file-1000.bin")).expect("vector file");
    assert_eq!(file, expected);
    assert!(pulled.iter().all(|m| m["from"] == "alice"));
}

#[test]
fn a_missing_folder_is_named_as_such() {
    let parent = tempfile::tempdir().expect("temporary directory");
    let missing = parent.path().join("nowhere");
    for args in [&["list"][..], &["--server", "127.0.0.1:9", "register", "x"]] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_messageu-client"));
        command.arg("--dir").arg(&missing).args(args);
        let output = run_bounded(command, "");
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("nowhere does not exist"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn a_damaged_peers_file_says_what_removing_it_loses_and_does_not_block_list() {
    let server = TestServer::start();
    let (alice, _bob) = keyed_pair(&server);
    let peers = alice.dir.path().join("peers.json");
    std::fs::write(&peers, "{ damaged").expect("peers.json damaged");
    assert_eq!(alice.ok(&["list"]), "bob\n");
    for args in [
        &["get-key", "bob"][..],
        &["send-text", "bob", TEXT],
        &["pull"],
    ] {
        let error = alice.fails(args);
        for expected in ["peers.json is damaged", "remove it", "symmetric keys"] {
            assert!(error.contains(expected), "{args:?}: {error}");
        }
    }
    let kept = std::fs::read_to_string(&peers).expect("peers.json");
    assert_eq!(kept, "{ damaged", "left as it was");
    std::fs::remove_file(&peers).expect("removed");
    alice.ok(&["get-key", "bob"]);
}

#[test]
fn server_errors_name_the_likely_causes_of_each_operation() {
    let unknown_caller = "may not know this client's id";
    let server = TestServer::start();
    let alice = User::new(server.addr, "2025", &[]);
    alice.ok(&["register", "alice"]);
    let carol = User::new(server.addr, "2025", &[]);
    let error = carol.fails(&["register", "alice"]);
    assert!(
        error.contains("server responded with an error: the name may be taken"),
        "{error}"
    );
    // The vectors' alice was registered on another server: this one does not know her id.
    let stranger = User::new(server.addr, "2025", &[]);
    stranger.use_me_info_of("alice");
    for args in [&["list"][..], &["pull"]] {
        let error = stranger.fails(args);
        assert!(error.contains(unknown_caller), "{args:?}: {error}");
    }

    let mut listed_bob = vec![2; 16];
    listed_bob.extend_from_slice(b"bob");
    listed_bob.resize(271, 0);
    let list = whole(2101, &listed_bob);
    let refused = whole(9000, &[]);
    refuses_malformed(
        &["get-key", "bob"],
        vec![list.clone(), refused.clone()],
        "the client asked about may no longer be registered",
    );
    refuses_malformed(
        &["request-key", "bob"],
        vec![list, refused],
        "the recipient may no longer be registered, the content may be larger",
    );
}

fn listed(name: &str, id: u8) -> Vec<u8> {
    let mut entry = vec![id; 16];
    entry.extend_from_slice(name.as_bytes());
    entry.resize(271, 0);
    whole(2101, &entry)
}

/// A send reply: the destination and a message id.
fn sent_to(id: u8) -> Vec<u8> {
    let mut payload = vec![id; 16];
    payload.extend_from_slice(&7u32.to_le_bytes());
    whole(2103, &payload)
}

#[test]
fn a_request_on_a_connection_closed_unanswered_is_sent_again_on_a_new_one() {
    // The list is answered, then the second list's connection closes without a reply.
    let (addr, server) =
        fake_server_connections(vec![vec![listed("bob", 2)], vec![listed("bob", 2)]]);
    let user = User::new(addr, "2025", &[]);
    user.use_me_info_of("alice");
    let output = user.console("120\n120\n0\n");
    assert!(!output.contains("reply"), "{output}");
    assert_eq!(output.matches("bob\n").count(), 2, "{output}");
    assert_eq!(output.matches("at your service").count(), 3, "{output}");
    drop(user);
    assert_eq!(server.join().expect("fake server"), [2, 1]);
}

#[test]
fn a_pull_whose_reply_was_lost_says_its_messages_may_be_lost_and_is_not_repeated() {
    let (addr, server) = fake_server_connections(vec![vec![]]);
    let user = User::new(addr, "2025", &[]);
    user.use_me_info_of("alice");
    let error = user.fails(&["pull"]);
    assert!(
        error.contains(&format!(
            "the connection to {addr} failed before the pull's reply was complete: messages \
             in that reply may be lost"
        )),
        "{error}"
    );
    drop(user);
    assert_eq!(server.join().expect("fake server"), [1], "pulled once");
}

#[test]
fn a_send_whose_reply_was_lost_is_never_sent_again_unasked() {
    let connections = || vec![vec![listed("bob", 2)], vec![sent_to(2)]];
    let (addr, server) = fake_server_connections(connections());
    let user = User::new(addr, "2025", &[]);
    user.use_me_info_of("alice");
    let error = user.fails(&["request-key", "bob"]);
    assert!(
        error.contains(&format!(
            "the connection to {addr} failed before it confirmed the message to bob: the \
             message may or may not have been stored, and was not sent again"
        )),
        "{error}"
    );
    assert_eq!(server.join().expect("fake server"), [2], "sent once");

    let (addr, server) = fake_server_connections(connections());
    let user = User::new(addr, "2025", &[]);
    user.use_me_info_of("alice");
    let output = user.console("151\nbob\ny\n0\n");
    for expected in [
        "may or may not have been stored",
        "Send it again? (y/n)",
        "Request for symmetric key sent to bob",
    ] {
        assert!(output.contains(expected), "{expected:?} missing: {output}");
    }
    assert_eq!(
        server.join().expect("fake server"),
        [2, 1],
        "sent again when asked"
    );

    let (addr, server) = fake_server_connections(connections());
    let user = User::new(addr, "2025", &[]);
    user.use_me_info_of("alice");
    let output = user.console("151\nbob\nn\n0\n");
    assert!(!output.contains("sent to bob"), "{output}");
    assert_eq!(server.join().expect("fake server"), [2], "not sent again");
}

/// The console run as a user runs it: lines typed one at a time, the output read as it comes.
struct LiveConsole {
    child: Child,
    stdin: ChildStdin,
    output: mpsc::Receiver<Vec<u8>>,
    seen: String,
}

impl LiveConsole {
    fn start(user: &User) -> LiveConsole {
        let mut child = Command::new(env!("CARGO_BIN_EXE_messageu-client"))
            .arg("--dir")
            .arg(user.dir.path())
            .args(&user.options)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn messageu-client");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = child.stdout.take().expect("stdout");
        let (sender, output) = mpsc::channel();
        thread::spawn(move || {
            let mut chunk = [0; 4096];
            while let Ok(read @ 1..) = stdout.read(&mut chunk) {
                if sender.send(chunk[..read].to_vec()).is_err() {
                    return;
                }
            }
        });
        let mut console = LiveConsole {
            child,
            stdin,
            output,
            seen: String::new(),
        };
        console.wait_for_menu();
        console
    }

    /// Types `line`, then returns what the console printed until the menu came up again.
    fn answer(&mut self, line: &str) -> String {
        writeln!(self.stdin, "{line}").expect("console reads");
        self.wait_for_menu()
    }

    /// What the console printed until the end of its menu.
    fn wait_for_menu(&mut self) -> String {
        let until = "0) Exit client\n?\n";
        let deadline = Instant::now() + CLIENT_DEADLINE;
        while !self.seen.contains(until) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok(chunk) => self.seen.push_str(&String::from_utf8_lossy(&chunk)),
                Err(_) => panic!("the console never printed {until:?}: {}", self.seen),
            }
        }
        std::mem::take(&mut self.seen)
    }
}

impl Drop for LiveConsole {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_console_goes_on_after_the_server_restarts_mid_session() {
    let server = TestServer::start();
    let addr = server.addr;
    let alice = User::new(addr, "2025", &[]);
    let bob = User::new(addr, "2025", &[]);
    alice.ok(&["register", "alice"]);
    bob.ok(&["register", "bob"]);

    let mut console = LiveConsole::start(&alice);
    let before = console.answer("120");
    assert!(before.starts_with("bob\n"), "{before}");

    // Same port, same database: the console's kept connection is closed by the stop.
    let dir = server.stop();
    let server = TestServer::start_in(dir, |config| config.listen = addr);
    let after = console.answer("120");
    assert!(after.starts_with("bob\n"), "{after}");
    let key = console.answer("130\nbob");
    assert!(key.contains("Public key of bob received"), "{key}");
    drop(console);
    drop(server);
}

#[test]
fn downloads_go_where_told_under_the_sender_and_message_id() {
    let server = TestServer::start();
    let (alice, bob) = keyed_pair(&server);
    let path = alice.dir.path().join("notes.txt");
    std::fs::write(&path, "a small file").expect("file to send");
    let path = path.to_str().expect("UTF-8 path");
    alice.ok(&["send-file", "bob", path]);
    let elsewhere = tempfile::tempdir().expect("temporary directory");
    let folder = elsewhere.path().join("in/box");
    let folder_arg = folder.to_str().expect("UTF-8 path");
    let pulled = bob.ok(&["pull", "--downloads", folder_arg, "--json"]);
    let files: Vec<_> = std::fs::read_dir(&folder)
        .expect("folder created")
        .map(|entry| entry.expect("entry").path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().expect("name").to_string_lossy();
    assert!(name.starts_with("alice-"), "{name}");
    assert!(pulled.contains(&*name), "{pulled}");
    assert_eq!(std::fs::read(&files[0]).expect("saved"), b"a small file");
    assert!(!bob.dir.path().join("downloads").exists());
}

#[test]
fn a_large_pull_shows_progress_on_a_terminal_and_nothing_else_in_a_pipe() {
    let server = TestServer::start();
    let (alice, bob) = keyed_pair(&server);
    let path = alice.dir.path().join("large.bin");
    std::fs::write(&path, vec![5; 8 << 20]).expect("file to send");
    let path = path.to_str().expect("UTF-8 path");

    alice.ok(&["send-file", "bob", path]);
    let piped = bob.ok(&["pull"]);
    assert!(piped.starts_with("From: alice\nContent:\n"), "{piped:?}");
    assert!(!piped.contains(['\r', '\x1b']), "{piped:?}");

    // script(1) runs the client on a pseudo-terminal and copies what it draws there.
    alice.ok(&["send-file", "bob", path]);
    let client = format!(
        "'{}' --dir '{}' pull",
        env!("CARGO_BIN_EXE_messageu-client"),
        bob.dir.path().display()
    );
    let mut command = Command::new("script");
    command.args(["-qec", &client, "/dev/null"]);
    let output = run_bounded(command, "");
    let terminal = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{terminal}");
    assert!(
        terminal.contains("/8.00 MiB"),
        "no progress drawn: {terminal:?}"
    );
    assert!(terminal.contains("From: alice"), "{terminal:?}");
}

#[test]
fn the_client_names_itself_in_version() {
    assert_names_itself(
        "messageu-client",
        Path::new(env!("CARGO_BIN_EXE_messageu-client")),
    );
}

#[test]
fn a_protected_account_is_used_through_connections_that_log_in() {
    let server = TestServer::start();
    let alice = User::new(server.addr, "2025", &[]);
    alice.ok(&["register", "alice"]);
    let output = alice.ok(&["protect"]);
    assert!(output.contains("Account protected"), "{output}");
    // Every new connection of this client logs in: it is still served, in every mode but
    // padded, whose single request cannot be preceded by a hello.
    alice.ok(&["list"]);
    let reconnecting = User::new(server.addr, "2021", &["--reconnect"]);
    std::fs::copy(
        alice.dir.path().join("me.info"),
        reconnecting.dir.path().join("me.info"),
    )
    .expect("me.info copied");
    reconnecting.ok(&["pull"]);
    let padded = User::new(server.addr, "2025", &["--padded"]);
    std::fs::copy(
        alice.dir.path().join("me.info"),
        padded.dir.path().join("me.info"),
    )
    .expect("me.info copied");
    let error = padded.fails(&["list"]);
    assert!(error.contains("server responded with an error"), "{error}");
    alice.ok(&["unprotect"]);
    padded.ok(&["list"]);
}

#[test]
fn protecting_needs_a_server_with_the_extensions() {
    let (addr, server) = fake_server(vec![whole(9000, &[])]);
    let user = User::new(addr, "2025", &[]);
    user.use_me_info_of("alice");
    let error = user.fails(&["protect"]);
    assert!(
        error.contains("does not offer account protection"),
        "{error}"
    );
    assert_eq!(server.join().expect("fake server"), [1]);
}

#[test]
fn accounts_status_unsend_and_account_deletion_through_the_subcommands() {
    let server = TestServer::start();
    let (alice, bob) = keyed_pair(&server);
    alice.ok(&["send-text", "bob", TEXT]);
    let status = bob.ok(&["status"]);
    // The key and the text; bob knows alice by name once he has listed the clients.
    assert!(status.starts_with("2 messages waiting"), "{status}");
    bob.ok(&["list"]);
    let status = bob.ok(&["status"]);
    assert!(status.contains("  alice: 2\n"), "{status}");
    let accounts = alice.ok(&["accounts"]);
    let names: Vec<_> = accounts
        .lines()
        .map(|line| line.split(' ').next().unwrap_or_default())
        .collect();
    assert_eq!(names, ["alice", "bob"], "{accounts}");
    assert!(
        accounts.contains("(online, last seen at Unix time "),
        "{accounts}"
    );
    assert_eq!(alice.ok(&["accounts", "b?b"]).lines().count(), 1);
    let error = alice.fails(&["unsend", "4000000000"]);
    assert!(error.contains("no such message waits"), "{error}");
    let error = alice.fails(&["accounts", "a\\"]);
    assert!(error.contains("invalid pattern"), "{error}");
    let deleted = bob.ok(&["delete-account"]);
    assert!(deleted.starts_with("Account deleted"), "{deleted}");
    assert_eq!(alice.ok(&["accounts"]).lines().count(), 1, "bob is gone");
}

#[test]
fn the_accounts_subcommands_need_a_server_with_the_extensions() {
    let (addr, server) = fake_server(vec![whole(9000, &[])]);
    let user = User::new(addr, "2025", &[]);
    user.use_me_info_of("alice");
    let error = user.fails(&["status"]);
    assert!(error.contains("does not offer queue-status"), "{error}");
    assert_eq!(server.join().expect("fake server"), [1]);
}
