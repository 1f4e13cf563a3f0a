//! A fake OpenAI-compatible embedder for tests: `POST /v1/embeddings` on 127.0.0.1 answering
//! deterministic unit vectors of the texts, recording each call's batch, and made to answer
//! 429 or to stall on demand.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// The fake's dimension.
pub const FAKE_DIM: usize = 8;

/// The fake's vector for `text`: seeded by its bytes, unit length.
pub fn fake_vector(text: &str) -> Vec<f32> {
    let seed = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let v: Vec<f32> = (0..FAKE_DIM)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / norm).collect()
}

#[derive(Default)]
struct State {
    batches: Mutex<Vec<Vec<String>>>,
    refuse: AtomicUsize,
    stall_ms: AtomicU64,
    keys: Mutex<Vec<String>>,
}

/// A running fake; it serves until the test process ends.
pub struct FakeEmbedder {
    /// Its base URL, `/v1` included.
    pub url: String,
    state: Arc<State>,
}

impl FakeEmbedder {
    /// Starts one on a free port.
    pub fn start() -> FakeEmbedder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the fake embedder");
        let url = format!("http://{}/v1", listener.local_addr().expect("address"));
        let state = Arc::new(State::default());
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = shared.clone();
                std::thread::spawn(move || serve(stream, &state));
            }
        });
        FakeEmbedder { url, state }
    }

    /// The texts of every call, in order.
    pub fn batches(&self) -> Vec<Vec<String>> {
        self.state.batches.lock().expect("batches").clone()
    }

    /// The next `n` calls are answered 429 with `retry-after: 1`.
    pub fn refuse_next(&self, n: usize) {
        self.state.refuse.store(n, Ordering::SeqCst);
    }

    /// Every call waits `ms` before it is answered.
    pub fn stall(&self, ms: u64) {
        self.state.stall_ms.store(ms, Ordering::SeqCst);
    }

    /// The bearer tokens calls carried.
    pub fn keys(&self) -> Vec<String> {
        self.state.keys.lock().expect("keys").clone()
    }
}

fn serve(mut stream: TcpStream, state: &State) {
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        let length: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < end + 4 + length {
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Value =
            serde_json::from_slice(&buf[end + 4..end + 4 + length]).unwrap_or(Value::Null);
        buf.drain(..end + 4 + length);
        if let Some(key) =
            header("authorization").and_then(|v| v.strip_prefix("Bearer ").map(str::to_string))
        {
            state.keys.lock().expect("keys").push(key);
        }
        let texts: Vec<String> = body["input"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        state.batches.lock().expect("batches").push(texts.clone());
        let stall = state.stall_ms.load(Ordering::SeqCst);
        if stall > 0 {
            std::thread::sleep(Duration::from_millis(stall));
        }
        let refused = state
            .refuse
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let (status, extra, answer) = if refused {
            (
                "429 Too Many Requests",
                "retry-after: 1\r\n",
                json!({"error": {"message": "slow down"}}),
            )
        } else {
            let data: Vec<Value> = texts
                .iter()
                .enumerate()
                .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": fake_vector(t)}))
                .collect();
            (
                "200 OK",
                "",
                json!({"object": "list", "data": data, "model": body["model"]}),
            )
        };
        let answer = answer.to_string();
        let reply = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}\r\n{answer}",
            answer.len()
        );
        if stream.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}
