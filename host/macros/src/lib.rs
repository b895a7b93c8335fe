//! # ricochet-macros
//!
//! The `#[with_retry]` attribute, the seed's decorator form of
//! `RetryPolicy::execute_with_retry`. Use it through `ricochet::with_retry`: the generated
//! code names `::ricochet`, so the service depends on `ricochet` (under that name),
//! not on this crate.
//!
//! Why an attribute and not only the closure form: the decorator is what a service team writes
//! on every outbound call; it keeps the function's signature readable, names the metrics after
//! the function, and builds the policy once per function instead of once per call site.

#![deny(missing_docs)]

use proc_macro::TokenStream;

mod args;
mod expand;

/// Retries an `async fn` with a ricochet `RetryPolicy`, the seed's decorator.
///
/// ```
/// use ricochet::{with_retry, RetryConfig};
///
/// #[with_retry(
///     retry_config = RetryConfig { max_attempts: 3, ..RetryConfig::default() },
///     retry_on = (std::io::Error,),
///     service_name = "lake",
/// )]
/// async fn call_service() -> Result<String, std::io::Error> {
///     Ok("data".to_string())
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // The return type is now Result<String, ricochet::RetryError<std::io::Error>>.
/// let body = call_service().await;
/// assert_eq!(body.ok().as_deref(), Some("data"));
/// # }
/// ```
///
/// # The return type is rewritten
///
/// The function must be declared as returning `Result<T, E>` (both types spelled out; an alias
/// such as `io::Result<T>` is refused because it hides `E`; `T` may be an `impl Trait`, as in
/// `Result<impl Display, E>`). **The generated function returns
/// `Result<T, ricochet::RetryError<E>>`**: `RetryError::MaxRetriesExceeded` when the policy
/// gave up on a retried error (its `last_error` holds the last `E`), `RetryError::NonRetryable(e)`
/// for an error that is not retried (returned after one call), `RetryError::CircuitOpen` when a
/// configured circuit breaker refused the call. `RetryError::into_last_error` gets the `E` back.
/// Inside the body, `?` and `return` work as before, against `Result<T, E>`: they end the
/// *attempt*.
///
/// # Arguments
///
/// | key | value | default |
/// |---|---|---|
/// | `service_name` | string literal: the `service` label of metrics and logs | required |
/// | `operation_name` | string literal: the `operation` label | the function's name |
/// | `retry_config` | any expression of type `RetryConfig` | `RetryConfig::default()` |
/// | `retry_on` | `(T1, T2, …)`, `(T,)` or `T`: error types that are retried | use `Classify` |
///
/// - **`retry_on`**: an error is retried if it *is* one of the listed types — directly, inside a
///   `Box<dyn Error>` or `anyhow::Error`, or as the source of an `io::Error`
///   (`ricochet::classify::is_error_type`). Its category (for the backoff, metrics and
///   `Retry-After`) is what `ricochet::classify::classify_any` finds when that category is
///   retried, else `ServiceUnavailable`. Any other error is returned at once as
///   `RetryError::NonRetryable`, with a category that is not retried (`classify_any`'s, else
///   `BusinessLogic`). Needs `E: 'static`; each listed type must implement `std::error::Error`.
/// - **Without `retry_on`**, `E` must implement `Classify` (and `Display`), and its
///   classification decides, exactly as in `execute_with_retry`. For `Box<dyn Error>` or
///   `anyhow::Error`, which do not implement it, list `retry_on` (the compile error says so).
/// - **`retry_config`** is evaluated once, at the function's first call, into a `RetryPolicy`
///   shared by every later call (a `static` per function, also shared by every instantiation of a
///   generic function). So it must not depend on the call: an expression that reads an
///   argument, `self` or a generic parameter is a compile error (it would be frozen at the first
///   call's value); constants, `Self::CONST` and function calls are fine. The policy uses the
///   embedded defaults: in-memory coordination and idempotency, metrics on prometheus's default
///   registry. For a config per call, a Redis coordinator, a token refresh hook or your own
///   registry, build a `RetryPolicy` and call `execute_with_retry`.
///
/// ## An invalid `retry_config`
///
/// It cannot be rejected at compile time (it is any expression) and the macro never panics.
/// At the first call the validation error is printed once to stderr (`ricochet: #[with_retry] on
/// `fetch` (service "lake"): invalid retry_config: max_attempts must be at least 1, got 0; …`),
/// and from then on every call runs the body **once, without retries**: `Ok` is returned as is,
/// an error as `RetryError::NonRetryable`. Each such call counts in
/// `retry_policy_fallback_total{service, operation, reason="invalid_config"}`, so the mistake
/// shows on the dashboard and can be alerted on.
///
/// # What the body may capture
///
/// The body runs once per attempt, so each attempt gets its own copy of the arguments:
///
/// - `&self` and `&T` arguments are copied (free).
/// - By-value arguments are **cloned for every attempt** (the first included) and must be
///   `Clone`; the compile error for one that is not says so. Take large values by reference.
///   `mut x: T` gives each attempt its own mutable clone; destructuring patterns work.
/// - `&mut T` arguments, `&mut self` and by-value receivers (`self`, `self: Arc<Self>`) are
///   refused with an error that says why: one exclusive borrow or one owned value cannot be
///   handed to several attempts.
///
/// Generic functions work (a cloned generic argument needs a `Clone` bound). The function can
/// be a free function or a method in an inherent `impl`; in a trait impl the rewritten return
/// type would no longer match the trait's.
///
/// See [`RetryPolicy`](https://docs.rs/ricochet/latest/ricochet/struct.RetryPolicy.html) and
/// [`Classify`](https://docs.rs/ricochet/latest/ricochet/classify/trait.Classify.html).
#[proc_macro_attribute]
pub fn with_retry(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item = proc_macro2::TokenStream::from(item);
    let expanded =
        syn::parse::<args::RetryArgs>(attr).and_then(|args| expand::expand(args, item.clone()));
    match expanded {
        Ok(tokens) => tokens.into(),
        // Keep the item, so its other uses do not add errors of their own.
        Err(error) => {
            let error = error.to_compile_error();
            quote::quote!(#error #item).into()
        }
    }
}
