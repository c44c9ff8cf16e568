//! Masking of recipient addresses for logs: phone numbers and emails never appear in clear.

/// `13812345678` → `138****5678`; short values keep only their first character.
pub fn mask_phone(phone: &str) -> String {
    let chars: Vec<char> = phone.chars().collect();
    if chars.len() >= 7 {
        let head: String = chars[..3].iter().collect();
        let tail: String = chars[chars.len() - 4..].iter().collect();
        format!("{head}****{tail}")
    } else {
        mask_short(&chars)
    }
}

/// `alice@example.com` → `a***@example.com`.
pub fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => mask_short(&email.chars().collect::<Vec<_>>()),
    }
}

/// Mask an address of any channel type.
pub fn mask_address(address: &str) -> String {
    if address.contains('@') {
        mask_email(address)
    } else if address.chars().filter(|c| c.is_ascii_digit()).count() >= 7 {
        mask_phone(address)
    } else {
        mask_short(&address.chars().collect::<Vec<_>>())
    }
}

fn mask_short(chars: &[char]) -> String {
    match chars.first() {
        Some(c) => format!("{c}***"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_and_emails_are_masked() {
        assert_eq!(mask_phone("13812345678"), "138****5678");
        assert_eq!(mask_email("alice@example.com"), "a***@example.com");
        assert_eq!(mask_address("+8613812345678"), "+86****5678");
        assert!(!mask_address("regid-0123").contains("0123"));
    }
}
