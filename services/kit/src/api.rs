//! Small pieces the app's services share: paging parameters and text-field checks.

use serde::Deserialize;
use serde_json::Value;
use utoipa::IntoParams;

use crate::error::ApiError;

/// Longest accepted text field, in characters.
pub const MAX_TEXT: usize = 1024;

/// `?limit=&cursor=` of the list routes, passed through to the gateway.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
pub struct Paging {
    /// Items per page (1 to 1000, default 100).
    #[param(value_type = u32, required = false, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// The `next` of the previous page.
    pub cursor: Option<String>,
}

/// A required text field: trimmed, not empty, at most [`MAX_TEXT`] characters.
pub fn text(value: &str, field: &str) -> Result<Value, ApiError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(ApiError::bad_request(format!(
            "`{field}` must not be empty"
        )));
    }
    if trimmed.contains('\0') {
        return Err(ApiError::bad_request(format!(
            "`{field}` holds a NUL character, which cannot be stored"
        )));
    }
    if trimmed.chars().count() > MAX_TEXT {
        return Err(ApiError::bad_request(format!(
            "`{field}` is longer than {MAX_TEXT} characters"
        )));
    }
    Ok(Value::String(trimmed.to_owned()))
}

/// The first 64 characters of `text`, for error messages.
pub fn short(text: &str) -> String {
    text.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_trimmed_and_bounded() {
        assert_eq!(text("  Bix ", "fname"), Ok(Value::String("Bix".into())));
        assert!(text("   ", "fname").is_err());
        assert!(text(&"x".repeat(MAX_TEXT + 1), "fname").is_err());
        assert!(text("a\0b", "fname").is_err());
    }
}
