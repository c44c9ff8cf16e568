//! The server side of SMTP, shared by the hub's bounce listener and the simulator's sink: the
//! session loop ([`run`]) answers the commands every server answers alike and hands the
//! transaction (`MAIL`, `RCPT`, `DATA`) and any other verb to a [`Handler`]; helpers read
//! command lines, addresses in `MAIL FROM`/`RCPT TO`, and the DATA stream.

use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// A session's connection: buffered both ways.
pub struct Conn {
    pub reader: BufReader<OwnedReadHalf>,
    writer: BufWriter<OwnedWriteHalf>,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Conn {
        let (r, w) = stream.into_split();
        Conn {
            reader: BufReader::new(r),
            writer: BufWriter::new(w),
        }
    }

    /// Send one reply (its lines joined with CRLF by the caller) and flush it.
    pub async fn reply(&mut self, line: &str) -> std::io::Result<()> {
        self.writer.write_all(line.as_bytes()).await?;
        self.writer.write_all(b"\r\n").await?;
        self.writer.flush().await
    }

    pub async fn line(&mut self) -> std::io::Result<Option<String>> {
        read_line(&mut self.reader).await
    }
}

/// What the session does after a command.
pub enum Next {
    Continue,
    Close,
}

/// A server's part of a session. The session loop answers EHLO/HELO (calling
/// [`Handler::reset`]), RSET, NOOP, VRFY and QUIT itself, refuses `MAIL` before a greeting,
/// and hands the rest here.
#[allow(async_fn_in_trait)]
pub trait Handler {
    /// The server's name, in the greeting and EHLO's first line.
    fn host(&self) -> &str;
    /// EHLO's extension lines (`PIPELINING`, `SIZE 1048576`, ...).
    fn extensions(&self) -> Vec<String>;
    /// Forget the transaction under way.
    fn reset(&mut self);
    async fn mail(&mut self, conn: &mut Conn, arg: &str) -> std::io::Result<()>;
    async fn rcpt(&mut self, conn: &mut Conn, arg: &str) -> std::io::Result<()>;
    async fn data(&mut self, conn: &mut Conn) -> std::io::Result<Next>;
    /// Another verb (upper-cased), after the greeting when `greeted`; `None` when the
    /// server does not know it.
    async fn other(
        &mut self,
        _conn: &mut Conn,
        _verb: &str,
        _arg: &str,
        _greeted: bool,
    ) -> std::io::Result<Option<Next>> {
        Ok(None)
    }
}

/// Serve one session: the `220` greeting, then commands until QUIT, the end of the stream, a
/// handler's [`Next::Close`] or `idle` without a command (`421 4.4.2`).
pub async fn run<H: Handler>(
    conn: &mut Conn,
    handler: &mut H,
    idle: Duration,
) -> std::io::Result<()> {
    conn.reply(&format!("220 {} ESMTP ready", handler.host()))
        .await?;
    let mut greeted = false;
    loop {
        let line = match tokio::time::timeout(idle, conn.line()).await {
            Ok(line) => line?,
            Err(_) => {
                let bye = format!("421 4.4.2 {} Idle too long, closing", handler.host());
                return conn.reply(&bye).await;
            }
        };
        let Some(line) = line else { return Ok(()) };
        if line.len() > MAX_LINE {
            conn.reply("500 5.5.2 Line too long").await?;
            continue;
        }
        let (verb, arg) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        let verb = verb.to_ascii_uppercase();
        let next = match verb.as_str() {
            "EHLO" => {
                greeted = true;
                handler.reset();
                let mut lines = vec![handler.host().to_string()];
                lines.extend(handler.extensions());
                let last = lines.len() - 1;
                let text: Vec<String> = lines
                    .iter()
                    .enumerate()
                    .map(|(i, l)| format!("250{}{l}", if i == last { ' ' } else { '-' }))
                    .collect();
                conn.reply(&text.join("\r\n")).await?;
                Next::Continue
            }
            "HELO" => {
                greeted = true;
                handler.reset();
                conn.reply(&format!("250 {}", handler.host())).await?;
                Next::Continue
            }
            "MAIL" if !greeted => {
                conn.reply("503 5.5.1 EHLO/HELO first").await?;
                Next::Continue
            }
            "MAIL" => {
                handler.mail(conn, arg).await?;
                Next::Continue
            }
            "RCPT" => {
                handler.rcpt(conn, arg).await?;
                Next::Continue
            }
            "DATA" => handler.data(conn).await?,
            "RSET" => {
                handler.reset();
                conn.reply("250 2.0.0 OK").await?;
                Next::Continue
            }
            "NOOP" => {
                conn.reply("250 2.0.0 OK").await?;
                Next::Continue
            }
            "VRFY" => {
                conn.reply("252 2.5.2 Cannot VRFY user").await?;
                Next::Continue
            }
            "QUIT" => {
                conn.reply("221 2.0.0 Bye").await?;
                Next::Close
            }
            _ => match handler.other(conn, &verb, arg, greeted).await? {
                Some(next) => next,
                None => {
                    let reply = match verb.as_str() {
                        "STARTTLS" | "AUTH" | "BDAT" | "ETRN" | "EXPN" => {
                            "502 5.5.1 Command not implemented"
                        }
                        _ => "500 5.5.2 Command not recognized",
                    };
                    conn.reply(reply).await?;
                    Next::Continue
                }
            },
        };
        if let Next::Close = next {
            return Ok(());
        }
    }
}

/// Longest command line read whole (RFC 5321 allows 512 octets; extensions add more).
pub const MAX_LINE: usize = 4096;

/// The address of a `MAIL FROM:`/`RCPT TO:` argument (`<a@b> SIZE=10` → `a@b`, `<>` → ``).
pub fn angle_addr(arg: &str) -> Option<String> {
    let arg = arg.trim_start();
    let addr = if let Some(rest) = arg.strip_prefix('<') {
        &rest[..rest.find('>')?]
    } else {
        arg.split_whitespace().next().unwrap_or_default()
    };
    Some(addr.trim().to_string())
}

/// `local@domain`, both non-empty, no white space.
pub fn valid_mailbox(addr: &str) -> bool {
    match addr.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && !domain.is_empty() && !addr.contains(char::is_whitespace)
        }
        None => false,
    }
}

/// Case-insensitive prefix strip returning the rest.
pub fn strip_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    (s.len() >= prefix.len()
        && s.is_char_boundary(prefix.len())
        && s[..prefix.len()].eq_ignore_ascii_case(prefix))
    .then(|| &s[prefix.len()..])
}

/// One command line without its CRLF; `None` at the end of the stream. A line longer than
/// 16 × [`MAX_LINE`] is cut there (the caller refuses lines over [`MAX_LINE`]).
pub async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R) -> std::io::Result<Option<String>> {
    let mut buf = Vec::with_capacity(128);
    let n = reader
        .take(MAX_LINE as u64 * 16)
        .read_until(b'\n', &mut buf)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// The message of a DATA command, up to the lone `.`: each line, dot-unstuffed and without
/// its line end, goes to `line`; returns the message's size (CRLF line ends counted), or
/// `None` when the stream ended first.
pub async fn read_data<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    mut line: impl FnMut(&[u8]),
) -> std::io::Result<Option<usize>> {
    let mut size = 0usize;
    let mut buf = Vec::with_capacity(256);
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        let content = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        if content == b"." {
            return Ok(Some(size));
        }
        let unstuffed = content.strip_prefix(b".").unwrap_or(content);
        size = size.saturating_add(unstuffed.len() + 2);
        line(unstuffed);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn addresses_and_prefixes() {
        assert_eq!(angle_addr("<a@b.c> SIZE=10").as_deref(), Some("a@b.c"));
        assert_eq!(angle_addr(" <> ").as_deref(), Some(""));
        assert_eq!(angle_addr("<a@b.c").as_deref(), None);
        assert_eq!(strip_ci("from:<x@y>", "FROM:"), Some("<x@y>"));
        assert_eq!(strip_ci("fr", "FROM:"), None);
        assert!(valid_mailbox("a@b"));
        assert!(!valid_mailbox("ab"));
        assert!(!valid_mailbox("a b@c"));
    }

    #[tokio::test]
    async fn data_is_unstuffed_and_ends_at_the_lone_dot() {
        let input = b"Subject: x\r\n\r\n..leading dot\r\nlast\n.\r\nNEXT\r\n".to_vec();
        let mut reader = tokio::io::BufReader::new(&input[..]);
        let mut lines = Vec::new();
        let size = read_data(&mut reader, |l| lines.push(l.to_vec()))
            .await
            .unwrap();
        assert_eq!(
            lines,
            [
                b"Subject: x".to_vec(),
                b"".to_vec(),
                b".leading dot".to_vec(),
                b"last".to_vec()
            ]
        );
        assert_eq!(size, Some(10 + 2 + 2 + 12 + 2 + 4 + 2));
        // What follows the message is the next command.
        assert_eq!(
            read_line(&mut reader).await.unwrap().as_deref(),
            Some("NEXT")
        );
        assert_eq!(read_line(&mut reader).await.unwrap(), None);
        // Cut off before the dot: no message.
        let mut short = tokio::io::BufReader::new(&b"a\r\nb\r\n"[..]);
        assert_eq!(read_data(&mut short, |_| {}).await.unwrap(), None);
    }
}
