use super::*;
use crate::diagnostic::Sources;

fn parse_ok(text: &str) -> FlowFile {
    match parse_flows(text) {
        Ok(file) => file,
        Err(e) => panic!("{text}\n{e}"),
    }
}

fn body(text: &str) -> Block {
    parse_ok(text).flows.remove(0).body
}

fn parse_err(text: &str) -> (String, (usize, usize)) {
    let mut sources = Sources::new();
    let file = sources.add("t.flow", text);
    let e = parse_flows(text).expect_err("should fail");
    (e.message.clone(), sources.line_col(file, e.span.start))
}

#[test]
fn flow_with_params_and_comments() {
    let file = parse_ok("# leading comment\nflow a(x, y) { end } # trailing\nflow b { }");
    assert_eq!(file.flows.len(), 2);
    assert_eq!(file.flows[0].name.node, "a");
    assert_eq!(
        file.flows[0]
            .params
            .iter()
            .map(|p| p.node.as_str())
            .collect::<Vec<_>>(),
        ["x", "y"]
    );
    assert_eq!(file.flows[0].name.span, Span::new(23, 24));
    assert!(file.flows[1].body.is_empty());
}

#[test]
fn let_query_and_query_one_with_args() {
    let b = body(
        r#"flow a(p) { let rows = query "select $1, $2" with p.id, "x" let one = query_one "select 1" }"#,
    );
    let Stmt::Let { name, query } = &b[0].node else {
        panic!("{b:?}")
    };
    assert_eq!(name.node, "rows");
    assert_eq!(query.kind, QueryKind::Rows);
    assert_eq!(query.sql.node, "select $1, $2");
    assert_eq!(query.args.len(), 2);
    let Stmt::Let { query, .. } = &b[1].node else {
        panic!()
    };
    assert_eq!(query.kind, QueryKind::One);
    assert!(query.args.is_empty());
}

#[test]
fn cached_queries_keep_their_lifetime_and_span() {
    let text = r#"flow a(p) { let rows = query "select $1" with p.id cached for 1m30s let one = query_one "select 1" cached for 5m }"#;
    let b = body(text);
    let Stmt::Let { query, .. } = &b[0].node else {
        panic!("{b:?}")
    };
    let cache = query.cache.as_ref().expect("cached");
    assert_eq!(cache.node, std::time::Duration::from_secs(90));
    assert_eq!(&text[cache.span.start..cache.span.end], "cached for 1m30s");
    assert_eq!(query.args.len(), 1);
    let Stmt::Let { query, .. } = &b[1].node else {
        panic!()
    };
    assert_eq!(
        query.cache.as_ref().map(|c| c.node),
        Some(std::time::Duration::from_secs(300))
    );
    // `exec` writes: it cannot be cached, and `cached` is not a name.
    let (message, _) = parse_err(r#"flow a { exec "delete from t" cached for 5m }"#);
    assert!(message.contains("found `cached`"), "{message}");
    let (message, _) = parse_err(r#"flow a { let x = query "select 1" cached 5m }"#);
    assert!(message.contains("`for`"), "{message}");
}

#[test]
fn request_payment_with_and_without_an_external_id() {
    let b = body(
        r#"flow a(p) { request_payment p.price, contact.wa_id -> paid request_payment 1500, "250788000101" for p.id -> paid }"#,
    );
    let Stmt::RequestPayment {
        amount,
        phone,
        external_id,
        next,
    } = &b[0].node
    else {
        panic!("{b:?}")
    };
    assert!(matches!(&amount.node, Expr::Path(path) if path.len() == 2));
    assert!(matches!(&phone.node, Expr::Path(_)));
    assert!(external_id.is_none());
    assert_eq!(next.node, "paid");
    let Stmt::RequestPayment { external_id, .. } = &b[1].node else {
        panic!("{b:?}")
    };
    assert!(external_id.is_some());
    let (message, _) = parse_err(r#"flow a { request_payment 1500 -> paid }"#);
    assert!(message.contains("`,`"), "{message}");
}

#[test]
fn exec_statement() {
    let b = body(r#"flow a(l) { exec "insert into t values ($1)" with l.latitude }"#);
    let Stmt::Exec(query) = &b[0].node else {
        panic!()
    };
    assert_eq!(query.kind, QueryKind::Exec);
    assert_eq!(query.args.len(), 1);
}

#[test]
fn string_escapes_are_decoded() {
    let b = body(r#"flow a { set s = "a\"b\\c\nd\te" }"#);
    let Stmt::Set { value, .. } = &b[0].node else {
        panic!()
    };
    assert_eq!(
        value.node,
        Expr::Literal(Literal::String("a\"b\\c\nd\te".into()))
    );
}

#[test]
fn if_else_if_else() {
    let b = body("flow a { if x is empty { end } else if not y { end } else { reply t } }");
    let Stmt::If {
        cond,
        then,
        otherwise,
    } = &b[0].node
    else {
        panic!()
    };
    assert!(matches!(cond.node, Expr::IsEmpty { negated: false, .. }));
    assert_eq!(then.len(), 1);
    let otherwise = otherwise.as_ref().expect("else");
    let Stmt::If {
        cond,
        otherwise: last,
        ..
    } = &otherwise[0].node
    else {
        panic!()
    };
    assert!(matches!(cond.node, Expr::Not(_)));
    assert!(matches!(
        last.as_ref().expect("else")[0].node,
        Stmt::Reply { .. }
    ));
}

#[test]
fn reply_with_bindings() {
    let b = body("flow a { reply job_list with jobs = rows, title = \"Jobs\" }");
    let Stmt::Reply { template, bindings } = &b[0].node else {
        panic!()
    };
    assert_eq!(template.node, "job_list");
    assert_eq!(
        bindings
            .iter()
            .map(|b| b.name.node.as_str())
            .collect::<Vec<_>>(),
        ["jobs", "title"]
    );
    assert!(matches!(&bindings[0].value.node, Expr::Path(p) if p[0].node == "rows"));
    assert_eq!(
        bindings[1].value.node,
        Expr::Literal(Literal::String("Jobs".into()))
    );
}

#[test]
fn await_each_input_kind() {
    for (word, kind) in [
        ("text", InputKind::Text),
        ("choice", InputKind::Choice),
        ("location", InputKind::Location),
    ] {
        let b = body(&format!("flow a {{ await {word} -> next_step }}"));
        let Stmt::Await { kind: k, next } = &b[0].node else {
            panic!()
        };
        assert_eq!(k.node, kind);
        assert_eq!(next.node, "next_step");
    }
}

#[test]
fn set_clear_call_end() {
    let b = body("flow a { set lang = \"rw\" clear lang call other(1, true, null) call done end }");
    assert!(matches!(&b[0].node, Stmt::Set { name, .. } if name.node == "lang"));
    assert!(matches!(&b[1].node, Stmt::Clear { name } if name.node == "lang"));
    assert!(
        matches!(&b[2].node, Stmt::Call { flow, args } if flow.node == "other" && args.len() == 3)
    );
    assert!(matches!(&b[3].node, Stmt::Call { args, .. } if args.is_empty()));
    assert!(matches!(b[4].node, Stmt::End));
}

#[test]
fn operator_precedence_follows_pratt_table() {
    let b = body("flow a { if a == 1 or b != 2 and not c is not empty { end } }");
    let Stmt::If { cond, .. } = &b[0].node else {
        panic!()
    };
    let Expr::Binary {
        op: BinaryOp::Or,
        rhs,
        ..
    } = &cond.node
    else {
        panic!("{cond:?}")
    };
    let Expr::Binary {
        op: BinaryOp::And,
        rhs,
        ..
    } = &rhs.node
    else {
        panic!()
    };
    let Expr::Not(inner) = &rhs.node else {
        panic!()
    };
    assert!(matches!(inner.node, Expr::IsEmpty { negated: true, .. }));
}

#[test]
fn comparison_operators_and_parentheses() {
    for (src, op) in [
        ("<", BinaryOp::Lt),
        ("<=", BinaryOp::Le),
        (">", BinaryOp::Gt),
        (">=", BinaryOp::Ge),
    ] {
        let b = body(&format!("flow a {{ if (x.n {src} -2.5) {{ end }} }}"));
        let Stmt::If { cond, .. } = &b[0].node else {
            panic!()
        };
        let Expr::Binary { op: got, rhs, .. } = &cond.node else {
            panic!()
        };
        assert_eq!(*got, op);
        assert_eq!(rhs.node, Expr::Literal(Literal::Number(-2.5)));
    }
}

#[test]
fn paths_keep_each_segment_span() {
    let b = body("flow a { set k = choice.row.id }");
    let Stmt::Set { value, .. } = &b[0].node else {
        panic!()
    };
    let Expr::Path(segments) = &value.node else {
        panic!()
    };
    assert_eq!(
        segments.iter().map(|s| s.node.as_str()).collect::<Vec<_>>(),
        ["choice", "row", "id"]
    );
    assert_eq!(segments[1].span, Span::new(24, 27));
}

#[test]
fn keywords_are_not_names_but_prefixes_are() {
    let b = body("flow a { let ending = query \"select 1\" let end_date = query \"select 2\" }");
    assert_eq!(b.len(), 2);
    let (message, _) = parse_err("flow end { }");
    assert_eq!(message, "expected a name, found `end`");
}

#[test]
fn errors_are_in_plain_words_with_line_and_column() {
    let cases = [
        ("flow a {\n  reply\n}", "expected a name, found `}`", (3, 1)),
        ("flow a {\n  awiat text -> b\n}", "expected a statement (let, exec, if, reply, await, set, clear, call, request_payment, choose_language, end) or `}`, found `awiat`", (2, 3)),
        ("flow a {\n  await number -> b\n}", "expected `text`, `choice` or `location`, found `number`", (2, 9)),
        ("flow a {\n  let x = query select\n}", "expected a string in double quotes, found `select`", (2, 17)),
        ("flow a {\n  end\n", "unclosed `{`", (1, 8)),
        ("flw a { }", "expected `flow`, found `flw`", (1, 1)),
        ("flow a { let x = query \"unterminated\n }", "expected a string in double quotes, found `\"` (a string)", (1, 24)),
    ];
    for (text, message, at) in cases {
        let (got, pos) = parse_err(text);
        assert_eq!(got, message, "{text}");
        assert_eq!(pos, at, "{text}");
    }
}

#[test]
fn conditions_parse_with_units_and_durations() {
    let c = parse_condition("error_rate > 50% for 5m").expect("parses");
    assert_eq!(c.metric.node, "error_rate");
    assert_eq!(c.op.node, CompareOp::Gt);
    assert_eq!(c.threshold.node, 50.0);
    assert_eq!(c.unit.map(|u| u.node), Some(Unit::Percent));
    assert_eq!(c.sustained.map(|d| d.node), Some(Duration::from_secs(300)));
    let c = parse_condition("p95_latency >= 1500ms").expect("parses");
    assert_eq!(c.unit.map(|u| u.node), Some(Unit::Millis));
    assert!(c.sustained.is_none());
    let c = parse_condition("dlq_size > 100").expect("parses");
    assert!(c.unit.is_none());
    assert!(c.scope.is_none());
    let c = parse_condition("p99_latency on wa-webhook-core > 2s for 10m").expect("parses");
    assert_eq!(c.metric.node, "p99_latency");
    assert_eq!(c.scope.map(|s| s.node).as_deref(), Some("wa-webhook-core"));
    assert_eq!(c.unit.map(|u| u.node), Some(Unit::Seconds));
}

#[test]
fn bad_conditions_say_what_was_expected() {
    assert_eq!(
        parse_condition("error_rate 5%").expect_err("fails").message,
        "expected `on` or a comparison (>, >=, <, <=, ==, !=), found `5`"
    );
    assert_eq!(
        parse_condition("error_rate > 5% for")
            .expect_err("fails")
            .message,
        "expected a duration such as `60s`, `5m` or `1h`, found end of file"
    );
    assert!(parse_condition("error_rate > 5 % for 5m").is_err());
    assert_eq!(
        parse_condition("error_rate on > 5%")
            .expect_err("fails")
            .message,
        "expected an endpoint name, found `>`"
    );
}

#[test]
fn durations() {
    assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
    assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
    assert!(parse_duration("60").is_err());
    assert!(parse_duration("1 m").is_err());
    assert!(parse_duration("").is_err());
}

/// Fuzz-style robustness: random bytes and mutations of the shipped flows must never panic, and
/// every error span must lie inside the text on character boundaries.
#[test]
fn random_and_mutated_input_never_panics() {
    let mut seeds: Vec<String> = Vec::new();
    let flows_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../flows");
    if let Ok(entries) = std::fs::read_dir(flows_dir) {
        for entry in entries.flatten() {
            if let Ok(text) = std::fs::read_to_string(entry.path()) {
                seeds.push(text);
            }
        }
    }
    assert!(!seeds.is_empty(), "no flows found in {flows_dir}");
    let alphabet: Vec<char> = "flow{}()=\"\\#->.,$ \n\tqueryifelse_é😀0123456789isnotempty"
        .chars()
        .collect();
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    for round in 0..3000 {
        let text: String = if round % 3 == 0 {
            (0..rng.usize(0..200))
                .map(|_| alphabet[rng.usize(..alphabet.len())])
                .collect()
        } else {
            let mut chars: Vec<char> = seeds[rng.usize(..seeds.len())].chars().collect();
            for _ in 0..rng.usize(1..6) {
                let at = rng.usize(0..=chars.len());
                match rng.u8(0..3) {
                    0 if at < chars.len() => {
                        chars.remove(at);
                    }
                    1 => chars.insert(at, alphabet[rng.usize(..alphabet.len())]),
                    _ => chars.truncate(at),
                }
            }
            chars.into_iter().collect()
        };
        if let Err(e) = parse_flows(&text) {
            assert!(
                e.span.start <= e.span.end && e.span.end <= text.len(),
                "{text:?}: {e:?}"
            );
            assert!(
                text.is_char_boundary(e.span.start) && text.is_char_boundary(e.span.end),
                "{text:?}"
            );
            assert!(
                e.message.starts_with("expected")
                    || e.message.starts_with("unexpected")
                    || e.message == "unclosed `{`",
                "{e:?}"
            );
            for (span, _) in &e.labels {
                assert!(
                    span.start <= span.end
                        && span.end <= text.len()
                        && text.is_char_boundary(span.start)
                        && text.is_char_boundary(span.end),
                    "{text:?}: {e:?}"
                );
            }
        }
        let _ = parse_condition(&text);
        let _ = parse_duration(&text);
    }
}

#[test]
fn statement_spans_end_at_their_last_token() {
    let text = "flow a {\n  reply t   \n  if x is empty   { end }\n}";
    let b = body(text);
    assert_eq!(&text[b[0].span.start..b[0].span.end], "reply t");
    let Stmt::If { cond, .. } = &b[1].node else {
        panic!()
    };
    assert_eq!(&text[cond.span.start..cond.span.end], "x is empty");
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let deep = format!(
        "flow a {{ if {}x{} is empty {{ end }} }}",
        "(".repeat(5000),
        ")".repeat(5000)
    );
    let e = parse_flows(&deep).expect_err("too deep");
    assert!(e.message.contains("nested more than 64 levels"), "{e:?}");
    let ifs = format!(
        "flow a {{ {} end {} }}",
        "if x is empty { ".repeat(3000),
        "} ".repeat(3000)
    );
    assert!(parse_flows(&ifs).is_err());
    // Braces inside strings and comments do not count.
    let fine = format!(
        "flow a {{ set s = \"{}\" # {}\n end }}",
        "{".repeat(100),
        "(".repeat(100)
    );
    assert!(parse_flows(&fine).is_ok(), "{:?}", parse_flows(&fine));
}

#[test]
fn choose_language_takes_an_expression() {
    let b = body("flow a(choice) { choose_language choice.id end }");
    let Stmt::ChooseLanguage(value) = &b[0].node else {
        panic!("{:?}", b[0].node)
    };
    let crate::ast::Expr::Path(path) = &value.node else {
        panic!("{:?}", value.node)
    };
    let names: Vec<&str> = path.iter().map(|p| p.node.as_str()).collect();
    assert_eq!(names, ["choice", "id"]);
    assert!(matches!(&b[1].node, Stmt::End));
}

#[test]
fn common_slips_get_a_suggestion() {
    let hint = |text: &str| parse_flows(text).expect_err("fails").hint;
    assert_eq!(
        hint("flow a(c) { if c.id = \"x\" { end } }").as_deref(),
        Some("to compare, write `==`; a single `=` only gives a value (`let`, `set`, `with`)")
    );
    assert_eq!(
        hint("flow a(c) { if c.id == \"x\" { end } elif c.id == \"y\" { end } }").as_deref(),
        Some("write `else if`")
    );
    assert_eq!(
        hint("flow a { awiat text -> b }").as_deref(),
        Some("did you mean `await`?")
    );
    assert_eq!(hint("flow a { zzzzzz }"), None);
}
