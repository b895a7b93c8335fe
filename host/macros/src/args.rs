//! The attribute's arguments: `key = value` pairs, parsed with errors that name what is wrong.
//!
//! Every key is checked here, before the function is looked at, so a typo is reported as a typo
//! (with the list of keys) rather than as a confusing type error in the generated code.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{Expr, Ident, LitStr, Token, Type};

/// The keys `#[with_retry]` accepts, in the order the docs list them.
const KEYS: &str = "`retry_config`, `retry_on`, `service_name`, `operation_name`";

/// `#[with_retry(...)]`'s arguments, parsed but not yet checked against the function.
pub struct RetryArgs {
    /// `retry_config = <expr>`: a `RetryConfig` expression, evaluated at the first call.
    pub retry_config: Option<Expr>,
    /// `retry_on = (T1, T2, …)`: the error types that are retried.
    pub retry_on: Option<Vec<Type>>,
    /// `service_name = "…"`, required.
    pub service_name: LitStr,
    /// `operation_name = "…"`; the function's name when absent.
    pub operation_name: Option<LitStr>,
}

impl Parse for RetryArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut retry_config = None;
        let mut retry_on = None;
        let mut service_name = None;
        let mut operation_name = None;
        while !input.is_empty() {
            let key: Ident = input.parse().map_err(|e| {
                syn::Error::new(
                    e.span(),
                    format!("expected `key = value` arguments; valid keys: {KEYS}"),
                )
            })?;
            let name = key.to_string();
            if !matches!(
                name.as_str(),
                "retry_config" | "retry_on" | "service_name" | "operation_name"
            ) {
                return Err(syn::Error::new(
                    key.span(),
                    format!("unknown `#[with_retry]` argument `{name}`; valid keys: {KEYS}"),
                ));
            }
            input.parse::<Token![=]>().map_err(|_| {
                syn::Error::new(key.span(), format!("expected `{name} = …` after `{name}`"))
            })?;
            let duplicate = match name.as_str() {
                "retry_config" => set(&mut retry_config, input.parse::<Expr>()?),
                "retry_on" => set(&mut retry_on, parse_retry_on(input)?),
                "service_name" => set(&mut service_name, parse_name(input, &name)?),
                _ => set(&mut operation_name, parse_name(input, &name)?),
            };
            if duplicate {
                return Err(syn::Error::new(
                    key.span(),
                    format!("`{name}` is given twice"),
                ));
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>().map_err(|e| {
                syn::Error::new(
                    e.span(),
                    format!("expected `,` after the value of `{name}`"),
                )
            })?;
        }
        let service_name = service_name.ok_or_else(|| {
            syn::Error::new(
                Span::call_site(),
                "`#[with_retry]` needs `service_name = \"…\"`: it labels the metrics and log \
                 lines of every call (e.g. `#[with_retry(service_name = \"lake\")]`)",
            )
        })?;
        Ok(Self {
            retry_config,
            retry_on,
            service_name,
            operation_name,
        })
    }
}

/// Stores `value`; true when the slot was already taken.
fn set<T>(slot: &mut Option<T>, value: T) -> bool {
    slot.replace(value).is_some()
}

/// A non-empty string literal (`service_name`, `operation_name`): metric labels are fixed text.
fn parse_name(input: ParseStream<'_>, key: &str) -> syn::Result<LitStr> {
    let not_literal = |span: Span| {
        syn::Error::new(
            span,
            format!(
                "`{key}` must be a string literal, e.g. `{key} = \"lake\"` \
                 (it becomes a metric label, so it is fixed at compile time)"
            ),
        )
    };
    if !input.peek(LitStr) {
        let span = input
            .parse::<Expr>()
            .map_or_else(|e| e.span(), |e| e.span());
        return Err(not_literal(span));
    }
    let lit: LitStr = input.parse()?;
    if lit.value().trim().is_empty() {
        return Err(syn::Error::new(
            lit.span(),
            format!("`{key}` must not be empty"),
        ));
    }
    Ok(lit)
}

/// `(T1, T2, …)`, `(T,)` or a single `T`.
fn parse_retry_on(input: ParseStream<'_>) -> syn::Result<Vec<Type>> {
    let shape = "`retry_on` takes error types in parentheses, e.g. \
                 `retry_on = (std::io::Error, tokio::time::error::Elapsed)` or `retry_on = (MyError,)`";
    let fork = input.fork();
    let ty = match fork.parse::<Type>() {
        Ok(ty) if fork.is_empty() || fork.peek(Token![,]) => ty,
        Ok(_) | Err(_) => {
            let span = input
                .parse::<Expr>()
                .map_or_else(|e| e.span(), |e| e.span());
            return Err(syn::Error::new(span, shape));
        }
    };
    input.parse::<Type>()?;
    let span = ty.span();
    let types: Vec<Type> = match ty {
        Type::Tuple(t) => t.elems.into_iter().collect(),
        Type::Paren(p) => vec![*p.elem],
        // A bare path: `retry_on = std::io::Error`.
        Type::Path(p) => vec![Type::Path(p)],
        other => return Err(syn::Error::new(other.span(), shape)),
    };
    if types.is_empty() {
        return Err(syn::Error::new(
            span,
            "`retry_on = ()` lists no error types: list at least one, or leave `retry_on` out \
             to classify errors with `ricochet::Classify`",
        ));
    }
    Ok(types)
}

#[cfg(test)]
mod tests {
    use super::RetryArgs;
    use quote::ToTokens;

    fn parse(tokens: proc_macro2::TokenStream) -> syn::Result<RetryArgs> {
        syn::parse2(tokens)
    }

    fn retry_on(args: &RetryArgs) -> Vec<String> {
        args.retry_on
            .iter()
            .flatten()
            .map(|t| t.to_token_stream().to_string())
            .collect()
    }

    #[test]
    fn the_readme_shape_parses_with_its_trailing_commas() {
        let args = parse(quote::quote! {
            retry_config = RetryConfig { max_attempts: 3, ..RetryConfig::default() },
            retry_on = (std::io::Error,),
            service_name = "lake",
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(args.service_name.value(), "lake");
        assert!(args.operation_name.is_none());
        assert!(args.retry_config.is_some());
        assert_eq!(retry_on(&args), ["std :: io :: Error"]);
    }

    #[test]
    fn retry_on_takes_a_list_a_one_tuple_a_parenthesised_type_or_a_bare_type() {
        for (tokens, expected) in [
            (
                quote::quote!((std::io::Error, Elapsed)),
                vec!["std :: io :: Error", "Elapsed"],
            ),
            (quote::quote!((MyError,)), vec!["MyError"]),
            (quote::quote!((MyError)), vec!["MyError"]),
            (quote::quote!(my::MyError), vec!["my :: MyError"]),
        ] {
            let args = parse(quote::quote!(service_name = "s", retry_on = #tokens))
                .unwrap_or_else(|e| panic!("{tokens}: {e}"));
            assert_eq!(retry_on(&args), expected, "{tokens}");
        }
    }

    #[test]
    fn mistakes_are_named() {
        for (tokens, message) in [
            (quote::quote!(), "needs `service_name"),
            (
                quote::quote!(service_name = "s", retries = 3),
                "unknown `#[with_retry]` argument `retries`",
            ),
            (
                quote::quote!(service_name = "s", service_name = "t"),
                "`service_name` is given twice",
            ),
            (
                quote::quote!(service_name = "",),
                "`service_name` must not be empty",
            ),
            (
                quote::quote!(service_name = NAME),
                "`service_name` must be a string literal",
            ),
            (
                quote::quote!(service_name = "s", operation_name = 3),
                "`operation_name` must be a string literal",
            ),
            (
                quote::quote!(service_name = "s", retry_on = [A, B]),
                "`retry_on` takes error types in parentheses",
            ),
            (
                quote::quote!(service_name = "s", retry_on = A | B),
                "`retry_on` takes error types in parentheses",
            ),
            (
                quote::quote!(service_name = "s", retry_on = ()),
                "lists no error types",
            ),
            (
                quote::quote!(service_name "s"),
                "expected `service_name = …`",
            ),
            (
                quote::quote!(service_name = "s" operation_name = "o"),
                "expected `,` after the value of `service_name`",
            ),
        ] {
            match parse(tokens.clone()) {
                Ok(_) => panic!("{tokens}: accepted"),
                Err(e) => assert!(e.to_string().contains(message), "{tokens}: {e}"),
            }
        }
    }
}
