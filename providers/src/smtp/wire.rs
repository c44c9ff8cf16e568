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

/// Up to and including the next LF, but at most `limit` bytes, appended to `buf`; the
/// number read (0 at the end of the stream).
async fn read_piece<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    limit: u64,
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    (&mut *reader).take(limit).read_until(b'\n', buf).await
}

/// One command line without its CRLF; `None` at the end of the stream. A line longer than
/// 16 × [`MAX_LINE`] is cut there and the rest of it read and dropped (the caller refuses
/// lines over [`MAX_LINE`]), so none of it is taken for the next command.
pub async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R) -> std::io::Result<Option<String>> {
    let limit = MAX_LINE as u64 * 16;
    let mut buf = Vec::with_capacity(128);
    if read_piece(reader, limit, &mut buf).await? == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        let mut rest = Vec::new();
        loop {
            rest.clear();
            if read_piece(reader, limit, &mut rest).await? == 0 || rest.last() == Some(&b'\n') {
                break;
            }
        }
    }
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// The longest piece of a message line read at once: a longer line reaches the caller in
/// pieces, so memory stays bounded whatever the client sends.
const DATA_PIECE: u64 = 64 * 1024;

/// The message of a DATA command, up to a line that is a lone `.` ended by CRLF (a bare LF
/// does not end it): each line, dot-unstuffed and without its line end, goes to `line` with
/// `true`; a line longer than 64 KiB goes in pieces, all but the last with `false`. Returns
/// the message's size (CRLF line ends counted), or `None` when the stream ended first.
pub async fn read_data<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    mut line: impl FnMut(&[u8], bool),
) -> std::io::Result<Option<usize>> {
    let mut size = 0usize;
    let mut buf = Vec::with_capacity(256);
    let mut at_line_start = true;
    loop {
        buf.clear();
        if read_piece(reader, DATA_PIECE, &mut buf).await? == 0 {
            return Ok(None);
        }
        if at_line_start && buf == b".\r\n" {
            return Ok(Some(size));
        }
        let complete = buf.last() == Some(&b'\n');
        let content = if complete {
            let content = buf.strip_suffix(b"\n").unwrap_or(&buf);
            content.strip_suffix(b"\r").unwrap_or(content)
        } else {
            &buf[..]
        };
        let unstuffed = if at_line_start {
            content.strip_prefix(b".").unwrap_or(content)
        } else {
            content
        };
        size = size.saturating_add(unstuffed.len() + if complete { 2 } else { 0 });
        line(unstuffed, complete);
        at_line_start = complete;
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
        // A bare-LF ".\n" is a line of the message, not its end.
        let input = b"Subject: x\r\n\r\n..leading dot\r\nlast\n.\nmore\r\n.\r\nNEXT\r\n".to_vec();
        let mut reader = tokio::io::BufReader::new(&input[..]);
        let mut lines = Vec::new();
        let size = read_data(&mut reader, |l, complete| {
            assert!(complete);
            lines.push(l.to_vec())
        })
        .await
        .unwrap();
        assert_eq!(
            lines,
            [
                b"Subject: x".to_vec(),
                b"".to_vec(),
                b".leading dot".to_vec(),
                b"last".to_vec(),
                b"".to_vec(),
                b"more".to_vec(),
            ]
        );
        assert_eq!(size, Some(10 + 2 + 2 + 12 + 2 + 4 + 2 + 2 + 4 + 2));
        // What follows the message is the next command.
        assert_eq!(
            read_line(&mut reader).await.unwrap().as_deref(),
            Some("NEXT")
        );
        assert_eq!(read_line(&mut reader).await.unwrap(), None);
        // Cut off before the dot: no message.
        let mut short = tokio::io::BufReader::new(&b"a\r\nb\r\n"[..]);
        assert_eq!(read_data(&mut short, |_, _| {}).await.unwrap(), None);
    }

    #[tokio::test]
    async fn long_lines_come_in_bounded_pieces() {
        // A 200 KiB line, a line that is a dot after it, then the end.
        let mut input = vec![b'x'; 200 * 1024];
        input.extend_from_slice(b"\r\n..\r\n.\r\n");
        let mut reader = tokio::io::BufReader::new(&input[..]);
        let mut pieces = Vec::new();
        let size = read_data(&mut reader, |l, complete| pieces.push((l.len(), complete)))
            .await
            .unwrap();
        assert_eq!(
            pieces,
            [
                (65536, false),
                (65536, false),
                (65536, false),
                (8192, true),
                (1, true)
            ]
        );
        assert_eq!(size, Some(200 * 1024 + 2 + 1 + 2));
        // A command line beyond the limit is cut, and its rest is not the next command.
        let mut input = vec![b'y'; MAX_LINE * 40];
        input.extend_from_slice(b"\r\nQUIT\r\n");
        let mut reader = tokio::io::BufReader::new(&input[..]);
        let first = read_line(&mut reader).await.unwrap().unwrap();
        assert_eq!(first.len(), MAX_LINE * 16);
        assert_eq!(
            read_line(&mut reader).await.unwrap().as_deref(),
            Some("QUIT")
        );
    }
}
