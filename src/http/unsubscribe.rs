//! One-click unsubscribe (RFC 8058) for email: every message an `email` channel sends carries
//! `List-Unsubscribe: <{public_url}/unsubscribe/{channel_id}?a=<address>&s=<signature>>` and
//! `List-Unsubscribe-Post: List-Unsubscribe=One-Click`. A mailbox provider's one-click `POST`
//! to that link (or the confirm button of the page a `GET` shows) opts the address out of
//! marketing: suppressed with reason `opted_out` and code `list-unsubscribe`, so priority-3
//! messages skip it while receipts, codes and notices still reach it. A `GET` never
//! unsubscribes by itself: link scanners and previews open links. The signature, an HMAC of the
//! address under a key derived per channel from the master key, lets a link unsubscribe only
//! the address it was sent to.

use actix_web::{HttpResponse, web};
use msghub_actors::provider::ChannelType;
use msghub_providers::UnsubscribeLinks;
use serde::Deserialize;

use super::State;
use crate::error::ApiError;
use crate::storage::crypto::Crypto;
use crate::storage::suppressions::SuppressReason;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/unsubscribe/{channel_id}", web::get().to(confirm))
        .route("/unsubscribe/{channel_id}", web::post().to(unsubscribe));
}

/// The unsubscribe links of channel `channel_id` under `base` (`http://host:port`).
pub fn links(base: &str, crypto: &Crypto, channel_id: i64) -> UnsubscribeLinks {
    UnsubscribeLinks {
        base: format!("{}/unsubscribe/{channel_id}", base.trim_end_matches('/')),
        key: crypto.derived_key(&format!("unsubscribe/{channel_id}")),
    }
}

#[derive(Deserialize)]
struct Link {
    a: String,
    s: String,
}

/// The channel's links, when `link`'s signature is its address's; refused otherwise.
fn checked(state: &State, channel_id: i64, link: &Link) -> Result<UnsubscribeLinks, ApiError> {
    let links = links(&state.public_url, &state.crypto, channel_id);
    if !links.verify(&link.a, &link.s) || link.a.is_empty() || link.a.len() > 256 {
        return Err(ApiError::new(
            403,
            "invalid_link",
            "this unsubscribe link is not valid for that address",
        ));
    }
    Ok(links)
}

fn page(title: &str, body: &str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
             <body><h1>{title}</h1>{body}</body></html>"
        ))
}

/// Escape text for HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `GET`: a page that asks before unsubscribing (its button posts to the same link).
async fn confirm(
    state: State,
    path: web::Path<i64>,
    link: web::Query<Link>,
) -> Result<HttpResponse, ApiError> {
    let action = escape(&checked(&state, path.into_inner(), &link)?.link(&link.a));
    let address = escape(&link.a);
    Ok(page(
        "退订 Unsubscribe",
        &format!(
            "<p>不再向 {address} 发送营销消息？</p><p>Stop marketing messages to {address}?</p>\
             <form method=\"post\" action=\"{action}\">\
             <input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
             <button type=\"submit\">退订 Unsubscribe</button></form>"
        ),
    ))
}

/// `POST` (the one-click request, or the confirm page's button): opt the address out.
async fn unsubscribe(
    state: State,
    path: web::Path<i64>,
    link: web::Query<Link>,
) -> Result<HttpResponse, ApiError> {
    checked(&state, path.into_inner(), &link)?;
    state
        .db
        .add_suppressions(
            ChannelType::Email,
            &[link.a.as_str()],
            SuppressReason::OptedOut,
            Some("list-unsubscribe"),
        )
        .await
        .map_err(|e| ApiError::internal("opting an address out", &e))?;
    let address = escape(&link.a);
    Ok(page(
        "已退订 Unsubscribed",
        &format!(
            "<p>{address} 将不再收到营销消息。</p><p>{address} will get no more marketing messages.</p>"
        ),
    ))
}
