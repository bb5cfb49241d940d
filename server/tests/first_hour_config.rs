//! #19, "an operator's first hour": configurations that `--check-config` used to pass (or
//! reported without a line) and that then ran otherwise than written.

mod common;

#[cfg(feature = "xdp")]
use std::process::Command;

use common::*;

const SERVER: &str = "[server]\nlisten = [\"127.0.0.1:11123\"]\nworkers = 1\n";
const CLOCK: &str = "\n[clock]\nsource = \"local\"\n";

/// (1) A log level the logger cannot use was `ok`, and the server then logged nothing.
#[test]
fn bad_log_levels_are_refused() {
    for level in ["loud", "stratumd=verbose", "[[["] {
        let text = format!("{SERVER}{CLOCK}\n[log]\nlevel = \"{level}\"\n");
        assert_refused(&text, 9, "log.level", "trace, debug, info, warn, error, off");
    }
    let (ok, _, err, _) = check_config(&format!("{SERVER}{CLOCK}\n[log]\nlevel = \"stratumd=debug,info\"\n"));
    assert!(ok, "{err}");
}

/// (3) Errors found across keys carry the line of the key, or of the entry in an array.
#[test]
fn semantic_errors_have_lines() {
    assert_refused(&format!("[server]\nlisten = []\n{CLOCK}"), 2, "server.listen", "at least one address");
    assert_refused(
        &format!("{SERVER}timestamping = \"hardware\"\n{CLOCK}"),
        4,
        "server.interface",
        "needs the interface",
    );
    assert_refused(
        &format!("{SERVER}interface = \"nosuch0\"\n{CLOCK}"),
        4,
        "server.interface",
        "no such interface `nosuch0`",
    );
    let multi = format!("[server]\nlisten = [\n  \"127.0.0.1:11123\",\n  \"127.0.0.1\",\n]\n{CLOCK}");
    assert_refused(&multi, 4, "server.listen", "`127.0.0.1` is not a socket address");
}

/// (4) Values that were accepted and then did something else.
#[test]
fn accepted_but_wrong_values_are_refused() {
    assert_refused(
        &format!("{SERVER}cores = [99]\n{CLOCK}"),
        4,
        "server.cores",
        "core 99 is not a CPU this process may run on",
    );
    assert_refused(&format!("{SERVER}port = 124\n{CLOCK}"), 4, "server.port", "takes the port from `listen`");
    assert_refused(
        &format!("{SERVER}{CLOCK}\n[access]\nallow = []\n"),
        9,
        "access.allow",
        "remove `allow` to allow everyone",
    );
    assert_refused(&format!("{SERVER}{CLOCK}refid = \"\"\n"), 7, "clock.refid", "1 to 4 ASCII characters");
}

#[cfg(feature = "xdp")]
mod xdp {
    use super::*;

    /// A veth pair with two RX queues, removed on drop.
    struct TwoQueueLink(&'static str);

    impl Drop for TwoQueueLink {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["link", "del", self.0]).status();
        }
    }

    /// (3) The xdp backend's cross-key errors have lines too.
    #[test]
    fn xdp_errors_have_lines() {
        let base = format!("[server]\nbackend = \"xdp\"\ninterface = \"lo\"\n{CLOCK}");
        let listen = base.replace("interface = \"lo\"\n", "interface = \"lo\"\nlisten = [\"127.0.0.1:123\"]\n");
        assert_refused(&listen, 4, "server.listen", "the xdp backend serves `port`");
        assert_refused(&base.replace("interface = \"lo\"\n", ""), 2, "server.interface", "needs the interface");
        assert_refused(&base.replace("\"lo\"", "\"nosuch0\""), 3, "server.interface", "no such interface");
        let twice = base.replace("interface = \"lo\"\n", "interface = \"lo\"\nqueues = [\n  0,\n  0,\n]\n");
        assert_refused(&twice, 6, "server.queues", "queue 0 is listed twice");
    }

    /// (15) A queue without a worker: valid, but its requests fall through to the kernel. The
    /// check says so, with the line, and still passes.
    #[test]
    fn a_queue_left_without_a_worker_is_a_warning() {
        if !require(is_root() && have_tool("ip"), "not root or no `ip`: cannot make a two-queue veth") {
            return;
        }
        let name = "fhq0";
        let _ = Command::new("ip").args(["link", "del", name]).stderr(std::process::Stdio::null()).status();
        let made = Command::new("ip")
            .args(["link", "add", name, "numrxqueues", "2", "numtxqueues", "2", "type", "veth"])
            .args(["peer", "name", "fhq1", "numrxqueues", "2", "numtxqueues", "2"])
            .status()
            .unwrap();
        assert!(made.success(), "ip link add failed");
        let _link = TwoQueueLink(name);
        let text = format!("[server]\nbackend = \"xdp\"\ninterface = \"{name}\"\nqueues = [0]\n{CLOCK}");
        let (ok, out, err, path) = check_config(&text);
        assert!(ok, "{err}");
        assert!(out.contains(": ok"), "{out}");
        assert!(err.starts_with(&format!("{path}:4: server.queues: warning: ")), "{err}");
        assert!(err.contains("queue 1 has no socket") && err.contains("no_socket"), "{err}");
        let (ok, _, err, _) = check_config(&text.replace("queues = [0]", "queues = [0, 1]"));
        assert!(ok && err.is_empty(), "every queue served: no warning: {err}");
    }
}
