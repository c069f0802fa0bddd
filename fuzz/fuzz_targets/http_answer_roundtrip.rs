//! Well-formed answers, as a server frames them (Content-Length, chunked with
//! extensions and trailers, or until close), read back as exactly their status and
//! body length, whatever the split into reads.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use loader::conn::{Answer, read_answers};

#[derive(Debug, Arbitrary)]
enum Framing {
    Length,
    Chunked {
        sizes: Vec<u8>,
        extension: bool,
        trailer: bool,
    },
    UntilClose,
}

#[derive(Debug, Arbitrary)]
struct Sent {
    status: u16,
    body: Vec<u8>,
    framing: Framing,
    upper_case_names: bool,
}

#[derive(Debug, Arbitrary)]
struct Input {
    answers: Vec<Sent>,
    piece: u8,
    head_only: bool,
}

fuzz_target!(|input: Input| {
    let mut bytes = Vec::new();
    let mut expected = Vec::new();
    for sent in &input.answers {
        let status = 100 + sent.status % 500;
        let bodiless =
            input.head_only || (100..200).contains(&status) || status == 204 || status == 304;
        let name = |n: &str| {
            if sent.upper_case_names {
                n.to_uppercase()
            } else {
                n.to_owned()
            }
        };
        bytes.extend_from_slice(format!("HTTP/1.1 {status} Whatever\r\nx-a: b\r\n").as_bytes());
        let body: &[u8] = if bodiless { b"" } else { &sent.body };
        let until_close = matches!(sent.framing, Framing::UntilClose) && !bodiless;
        match &sent.framing {
            Framing::Length => {
                bytes.extend_from_slice(
                    format!("{}: {}\r\n\r\n", name("content-length"), body.len()).as_bytes(),
                );
                bytes.extend_from_slice(body);
            }
            Framing::Chunked {
                sizes,
                extension,
                trailer,
            } => {
                bytes.extend_from_slice(
                    format!("{}: chunked\r\n\r\n", name("transfer-encoding")).as_bytes(),
                );
                if !bodiless {
                    let mut rest = body;
                    let mut sizes = sizes.iter().map(|s| usize::from(*s).max(1)).cycle();
                    while !rest.is_empty() {
                        let n = sizes.next().unwrap_or(rest.len()).min(rest.len());
                        let ext = if *extension { ";a=b" } else { "" };
                        bytes.extend_from_slice(format!("{n:x}{ext}\r\n").as_bytes());
                        bytes.extend_from_slice(&rest[..n]);
                        bytes.extend_from_slice(b"\r\n");
                        rest = &rest[n..];
                    }
                    bytes.extend_from_slice(b"0\r\n");
                    if *trailer {
                        bytes.extend_from_slice(b"x-trailer: 1\r\n");
                    }
                    bytes.extend_from_slice(b"\r\n");
                }
            }
            Framing::UntilClose => {
                bytes.extend_from_slice(b"\r\n");
                bytes.extend_from_slice(body);
            }
        }
        expected.push(Ok(Answer {
            status,
            body_len: body.len(),
        }));
        if until_close {
            break;
        }
    }
    let read = read_answers(&bytes, usize::from(input.piece), input.head_only);
    assert_eq!(read, expected, "{:?}", String::from_utf8_lossy(&bytes));
});
