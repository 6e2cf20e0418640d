//! One line for an error and its causes: what logs, CLI messages and a notification's `last_error` show (a
//! transport error's top level often says only "transport error"; the cause says what happened).

/// `error: cause: cause's cause…`, following `source()`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("inner")]
    struct Inner;

    #[test]
    fn every_cause_is_named_in_order() {
        assert_eq!(super::error_chain(&Outer(Inner)), "outer: inner");
        assert_eq!(super::error_chain(&Inner), "inner");
    }
}
