//! The expansion: the function is kept, its body becomes the attempt of a `RetryPolicy` call.
//!
//! ```text
//! async fn f(args) -> Result<T, E> { body }
//! ```
//! becomes
//! ```text
//! async fn f(args) -> Result<T, RetryError<E>> {
//!     static POLICY: OnceLock<Option<RetryPolicy>>;     // built from retry_config at the first call
//!     let attempt = || { let arg = clone(&arg); …; async move { body } };
//!     POLICY.execute_classified(attempt, service, operation, classify).await
//! }
//! ```
//! Each attempt gets its own clone of every by-value argument, because the body may consume them.
//! The clone goes through a local trait whose `on_unimplemented` message says why a non-`Clone`
//! argument is refused. `&mut` arguments and by-value receivers are refused up front: one
//! exclusive borrow cannot be handed to several attempt futures without `unsafe`.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{FnArg, GenericArgument, ItemFn, Pat, PathArguments, ReturnType, Type};

use crate::args::RetryArgs;

/// Expands `#[with_retry(args)]` on `item`.
pub fn expand(args: RetryArgs, item: TokenStream) -> syn::Result<TokenStream> {
    let func: ItemFn = syn::parse2(item.clone()).map_err(|_| not_a_function(item))?;
    let name = func.sig.ident.unraw().to_string();
    if func.sig.asyncness.is_none() {
        let (fn_token, ident) = (&func.sig.fn_token, &func.sig.ident);
        return Err(syn::Error::new_spanned(
            quote!(#fn_token #ident),
            format!(
                "`#[with_retry]` applies to `async fn` only (it waits between attempts); \
                 make `{name}` an `async fn`"
            ),
        ));
    }
    if let Some(variadic) = &func.sig.variadic {
        return Err(syn::Error::new(
            variadic.span(),
            "`#[with_retry]` does not support variadic functions",
        ));
    }
    let (original_output, ok_ty, err_ty) = result_types(&func.sig, &name)?;
    if let Some(expr) = &args.retry_config {
        check_config_reads_nothing_per_call(expr, &func.sig)?;
    }
    // `impl Trait` can only be named in the return type: inside, it is left to inference.
    let attempt_output = infer_impl_trait(original_output);

    let mut sig = func.sig.clone();
    let mut clones = Vec::new();
    for (index, input) in sig.inputs.iter_mut().enumerate() {
        match input {
            FnArg::Receiver(receiver) => check_receiver(receiver)?,
            FnArg::Typed(arg) => {
                if let Type::Reference(r) = &*arg.ty {
                    if r.mutability.is_some() {
                        return Err(syn::Error::new_spanned(
                            r,
                            "`#[with_retry]` cannot pass a `&mut` argument to several attempts \
                             (each attempt's future would need its own exclusive borrow); take \
                             `&T` (with a `Mutex` or other interior mutability if the body \
                             mutates it) or an owned `Clone` value",
                        ));
                    }
                }
                let clone = |pat: &Pat, source: &syn::Ident| {
                    quote_spanned! {arg.ty.span()=>
                        let #pat = __RicochetRetryArg::__ricochet_clone(&#source);
                    }
                };
                match &mut *arg.pat {
                    Pat::Wild(_) => {}
                    Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => {
                        let inner = Pat::Ident(p.clone());
                        // The outer binding is only read (cloned per attempt): no `mut` there.
                        p.mutability = None;
                        clones.push(clone(&inner, &p.ident));
                    }
                    pat => {
                        // A destructuring pattern: bind the whole value, destructure per attempt.
                        let source =
                            format_ident!("__ricochet_arg{}", index, span = Span::mixed_site());
                        clones.push(clone(pat, &source));
                        *arg.pat = syn::parse_quote!(#source);
                    }
                }
            }
        }
    }
    sig.output = syn::parse_quote! {
        -> ::core::result::Result<#ok_ty, ::ricochet::RetryError<#err_ty>>
    };

    // Local names of the expansion resolve at the macro (hygiene): the body cannot see them.
    let mixed = Span::mixed_site();
    let service = &args.service_name;
    let operation = match &args.operation_name {
        Some(lit) => lit.clone(),
        None => syn::LitStr::new(&name, func.sig.ident.span()),
    };
    let config = match &args.retry_config {
        Some(expr) => quote!(#expr),
        None => quote!(::ricochet::RetryConfig::default()),
    };
    let call = match &args.retry_on {
        None => quote_spanned! {mixed=>
            ::ricochet::RetryPolicy::execute_with_retry(
                __ricochet_policy, __ricochet_attempt, __ricochet_service, __ricochet_operation,
            ).await
        },
        Some(types) => {
            // The check takes the listed type's span (a type that is no error is reported
            // there); the local it reads keeps the expansion's hygiene.
            let any = syn::Ident::new("__ricochet_any", mixed);
            let checks = types.iter().map(|ty| {
                quote_spanned! {ty.span()=>
                    ::ricochet::classify::is_error_type::<#ty>(#any)
                }
            });
            quote_spanned! {mixed=>
                ::ricochet::RetryPolicy::execute_classified(
                    __ricochet_policy, __ricochet_attempt, __ricochet_service, __ricochet_operation,
                    |__ricochet_error: &#err_ty| -> ::ricochet::Classification {
                        use ::ricochet::ErrorCategory as __C;
                        let __ricochet_any: &(dyn ::core::any::Any + 'static) = __ricochet_error;
                        let __ricochet_listed = #(#checks)||*;
                        let __ricochet_set = __ricochet_policy.config().retry_on;
                        // The core's rule: AuthExpired needs a token refresh (none here),
                        // RateLimited is always retried, the rest follow the config's set.
                        let __ricochet_retried = |c: __C| match c {
                            __C::AuthExpired => false,
                            __C::RateLimited => true,
                            other => __ricochet_set.contains(other),
                        };
                        match ::ricochet::classify::classify_any(__ricochet_any) {
                            ::core::option::Option::Some(known)
                                if __ricochet_retried(known.category) == __ricochet_listed => known,
                            _ => {
                                let preferred = if __ricochet_listed {
                                    __C::ServiceUnavailable
                                } else {
                                    __C::BusinessLogic
                                };
                                let category = if __ricochet_retried(preferred) == __ricochet_listed {
                                    preferred
                                } else {
                                    __C::ALL
                                        .into_iter()
                                        .find(|c| __ricochet_retried(*c) == __ricochet_listed)
                                        .unwrap_or(preferred)
                                };
                                ::ricochet::Classification::new(category)
                            }
                        }
                    },
                ).await
            }
        }
    };

    // The clone trait only when something is cloned (an unused local trait would warn).
    let clone_trait = (!clones.is_empty()).then(|| {
        quote_spanned! {mixed=>
            #[diagnostic::on_unimplemented(
                message = "`#[with_retry]` runs the body once per attempt, so it clones each by-value argument per attempt: `{Self}` must implement `Clone`",
                label = "this argument is cloned for every attempt",
                note = "take it by reference (`&{Self}`), or implement or derive `Clone` for it"
            )]
            trait __RicochetRetryArg: ::core::marker::Sized {
                fn __ricochet_clone(&self) -> Self;
            }
            impl<__RicochetT: ::core::clone::Clone> __RicochetRetryArg for __RicochetT {
                #[inline]
                fn __ricochet_clone(&self) -> Self {
                    ::core::clone::Clone::clone(self)
                }
            }
        }
    });
    let attrs = &func.attrs;
    let vis = &func.vis;
    let body = &func.block;
    Ok(quote_spanned! {mixed=>
        #(#attrs)*
        #vis #sig {
            #clone_trait
            static __RICOCHET_POLICY: ::std::sync::OnceLock<
                ::core::option::Option<::ricochet::RetryPolicy>,
            > = ::std::sync::OnceLock::new();
            let __ricochet_service: &'static str = #service;
            let __ricochet_operation: &'static str = #operation;
            let __ricochet_policy = __RICOCHET_POLICY.get_or_init(|| {
                let config: ::ricochet::RetryConfig = #config;
                match ::ricochet::RetryPolicy::new(config) {
                    ::core::result::Result::Ok(policy) => ::core::option::Option::Some(policy),
                    ::core::result::Result::Err(error) => {
                        ::ricochet::__private::invalid_config(
                            __ricochet_service, __ricochet_operation, &error,
                        );
                        ::core::option::Option::None
                    }
                }
            });
            let __ricochet_attempt = || {
                #(#clones)*
                async move {
                    // Fixes the block's output type before the body is checked, so `?` converts.
                    if let ::core::option::Option::Some(ret) =
                        ::core::option::Option::None::<#attempt_output>
                    {
                        #[allow(unreachable_code)]
                        return ret;
                    }
                    let ret: #attempt_output = #body;
                    #[allow(unreachable_code)]
                    ret
                }
            };
            match __ricochet_policy {
                ::core::option::Option::Some(__ricochet_policy) => #call,
                ::core::option::Option::None => {
                    ::ricochet::__private::ran_without_policy(__ricochet_service, __ricochet_operation);
                    __ricochet_attempt().await.map_err(::ricochet::RetryError::NonRetryable)
                }
            }
        }
    })
}

/// `T` and `E` of a return type spelled `Result<T, E>` (any path ending in `Result`).
/// Returns the whole type, `T` and `E`.
fn result_types<'a>(
    sig: &'a syn::Signature,
    name: &str,
) -> syn::Result<(&'a Type, &'a Type, &'a Type)> {
    let ty = match &sig.output {
        ReturnType::Type(_, ty) => ty,
        ReturnType::Default => {
            // Points at `name(…)`, where the return type is missing.
            let ident = &sig.ident;
            let mut close = proc_macro2::Punct::new(';', proc_macro2::Spacing::Alone);
            close.set_span(sig.paren_token.span.close());
            return Err(syn::Error::new_spanned(
                quote!(#ident #close),
                format!(
                    "`#[with_retry]` needs `{name}` to return `Result<T, E>`: the error decides \
                     whether to retry, and `{name}` then returns \
                     `Result<T, ricochet::RetryError<E>>`"
                ),
            ));
        }
    };
    let parts = match &**ty {
        Type::Path(p) if p.qself.is_none() => p.path.segments.last().and_then(|last| {
            match (&last.arguments, last.ident == "Result") {
                (PathArguments::AngleBracketed(a), true) if a.args.len() == 2 => {
                    match (&a.args[0], &a.args[1]) {
                        (GenericArgument::Type(t), GenericArgument::Type(e)) => Some((&**ty, t, e)),
                        _ => None,
                    }
                }
                _ => None,
            }
        }),
        _ => None,
    };
    parts.ok_or_else(|| {
        syn::Error::new_spanned(
            ty,
            format!(
                "`#[with_retry]` needs `{name}`'s return type written as `Result<T, E>` with both \
                 types spelled out (aliases such as `io::Result<T>` hide `E`): it is rewritten \
                 to `Result<T, ricochet::RetryError<E>>`"
            ),
        )
    })
}

/// `ty` with every `impl Trait` in it replaced by `_` (a type the compiler infers).
fn infer_impl_trait(ty: &Type) -> Type {
    let mut ty = ty.clone();
    replace_impl_trait(&mut ty);
    ty
}

fn replace_impl_trait(ty: &mut Type) {
    match ty {
        Type::ImplTrait(_) => *ty = syn::parse_quote!(_),
        Type::Path(p) => {
            if let Some(q) = &mut p.qself {
                replace_impl_trait(&mut q.ty);
            }
            for segment in &mut p.path.segments {
                if let PathArguments::AngleBracketed(a) = &mut segment.arguments {
                    for arg in &mut a.args {
                        if let GenericArgument::Type(t) = arg {
                            replace_impl_trait(t);
                        }
                    }
                }
            }
        }
        Type::Reference(r) => replace_impl_trait(&mut r.elem),
        Type::Ptr(p) => replace_impl_trait(&mut p.elem),
        Type::Slice(s) => replace_impl_trait(&mut s.elem),
        Type::Array(a) => replace_impl_trait(&mut a.elem),
        Type::Paren(p) => replace_impl_trait(&mut p.elem),
        Type::Group(g) => replace_impl_trait(&mut g.elem),
        Type::Tuple(t) => t.elems.iter_mut().for_each(replace_impl_trait),
        _ => {}
    }
}

/// Refuses a `retry_config` that reads an argument, `self` or a generic parameter: it is
/// evaluated once, at the first call, into a policy every later call (and every instantiation)
/// shares, so such a value would be frozen at whatever the first call passed.
fn check_config_reads_nothing_per_call(
    config: &syn::Expr,
    sig: &syn::Signature,
) -> syn::Result<()> {
    let mut locals = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(r) => locals.push(syn::Ident::new("self", r.self_token.span)),
            FnArg::Typed(arg) => pattern_bindings(&arg.pat, &mut locals),
        }
    }
    let generics: Vec<syn::Ident> = sig
        .generics
        .params
        .iter()
        .filter_map(|p| match p {
            syn::GenericParam::Type(t) => Some(t.ident.clone()),
            syn::GenericParam::Const(c) => Some(c.ident.clone()),
            syn::GenericParam::Lifetime(_) => None,
        })
        .collect();
    let tokens: Vec<proc_macro2::TokenTree> = quote!(#config).into_iter().collect();
    scan_config_tokens(&tokens, &locals, &generics)
}

fn scan_config_tokens(
    tokens: &[proc_macro2::TokenTree],
    locals: &[syn::Ident],
    generics: &[syn::Ident],
) -> syn::Result<()> {
    use proc_macro2::TokenTree as T;
    let punct = |i: Option<&T>, c: char| matches!(i, Some(T::Punct(p)) if p.as_char() == c);
    for (i, token) in tokens.iter().enumerate() {
        match token {
            T::Group(g) => {
                let inner: Vec<T> = g.stream().into_iter().collect();
                scan_config_tokens(&inner, locals, generics)?;
            }
            T::Ident(ident) => {
                let before = i.checked_sub(1).and_then(|j| tokens.get(j));
                let before2 = i.checked_sub(2).and_then(|j| tokens.get(j));
                let (after, after2) = (tokens.get(i + 1), tokens.get(i + 2));
                // `.x` (a field or method) and `a::x` (a path segment) are not variables.
                if punct(before, '.') || (punct(before, ':') && punct(before2, ':')) {
                    continue;
                }
                let path_start = punct(after, ':') && punct(after2, ':');
                let field_name = punct(after, ':') && !path_start;
                let what = if !path_start && !field_name && locals.contains(ident) {
                    if ident == "self" {
                        "`self`".to_string()
                    } else {
                        format!("the argument `{ident}`")
                    }
                } else if !field_name && generics.contains(ident) {
                    format!("the generic parameter `{ident}`")
                } else {
                    continue;
                };
                return Err(syn::Error::new(
                    ident.span(),
                    format!(
                        "`retry_config` cannot read {what}: it is evaluated once, at the first \
                         call, into a policy that every later call (and every instantiation of \
                         a generic function) shares, so the value would be frozen; make it a \
                         constant expression, or build a `RetryPolicy` per value and call \
                         `execute_with_retry`"
                    ),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The variables a parameter pattern binds.
fn pattern_bindings(pat: &Pat, out: &mut Vec<syn::Ident>) {
    match pat {
        Pat::Ident(p) => {
            out.push(p.ident.clone());
            if let Some((_, sub)) = &p.subpat {
                pattern_bindings(sub, out);
            }
        }
        Pat::Tuple(t) => t.elems.iter().for_each(|p| pattern_bindings(p, out)),
        Pat::TupleStruct(t) => t.elems.iter().for_each(|p| pattern_bindings(p, out)),
        Pat::Struct(s) => s.fields.iter().for_each(|f| pattern_bindings(&f.pat, out)),
        Pat::Reference(r) => pattern_bindings(&r.pat, out),
        Pat::Slice(s) => s.elems.iter().for_each(|p| pattern_bindings(p, out)),
        Pat::Paren(p) => pattern_bindings(&p.pat, out),
        Pat::Or(o) => o.cases.iter().for_each(|p| pattern_bindings(p, out)),
        Pat::Type(t) => pattern_bindings(&t.pat, out),
        _ => {}
    }
}

/// Accepts `&self` (any lifetime, or `self: &Self`); refuses what one attempt would consume.
fn check_receiver(receiver: &syn::Receiver) -> syn::Result<()> {
    let shared_ref = match &receiver.kind {
        syn::ReceiverKind::Reference(_, _, mutability) => Some(mutability.is_none()),
        syn::ReceiverKind::Typed(_, ty) => match &**ty {
            Type::Reference(r) => Some(r.mutability.is_none()),
            _ => None,
        },
        _ => None,
    };
    match shared_ref {
        Some(true) => Ok(()),
        Some(false) => Err(syn::Error::new_spanned(
            receiver,
            "`#[with_retry]` cannot retry a `&mut self` method: each attempt's future would need \
             its own exclusive borrow of `self`; take `&self` and keep mutable state behind a \
             `Mutex` or an atomic",
        )),
        _ => Err(syn::Error::new_spanned(
            receiver,
            "`#[with_retry]` needs a `&self` receiver: the body runs once per attempt and cannot \
             consume `self` each time (for `self: Arc<Self>`, take `&self` and clone the `Arc` \
             inside if the body needs one)",
        )),
    }
}

/// The error for an item that is not a function with a body.
fn not_a_function(item: TokenStream) -> syn::Error {
    let kind = match syn::parse2::<syn::Item>(item.clone()) {
        Ok(syn::Item::Struct(_)) => "a struct",
        Ok(syn::Item::Enum(_)) => "an enum",
        Ok(syn::Item::Union(_)) => "a union",
        Ok(syn::Item::Impl(_)) => "an impl block (put it on each `async fn` inside)",
        Ok(syn::Item::Trait(_)) => "a trait",
        Ok(syn::Item::Mod(_)) => "a module",
        Ok(syn::Item::Const(_)) => "a const",
        Ok(syn::Item::Static(_)) => "a static",
        Ok(syn::Item::Type(_)) => "a type alias",
        Ok(syn::Item::Use(_)) => "a `use` item",
        _ if syn::parse2::<syn::TraitItemFn>(item.clone()).is_ok() => "a function without a body",
        _ => "this item",
    };
    syn::Error::new(
        item.span(),
        format!(
            "`#[with_retry]` applies to an `async fn` with a body (a free function or a method), \
             not to {kind}"
        ),
    )
}
