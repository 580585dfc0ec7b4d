use super::*;
use crate::diagnostic::Sources;
use crate::parser::parse_flow_file;

fn run(text: &str, templates: &[(&str, &[&str])]) -> Vec<Diagnostic> {
    let mut sources = Sources::new();
    let file = sources.add("t.flow", text);
    let ast = parse_flow_file(text, file).expect("parses");
    let context = Context {
        templates: templates
            .iter()
            .map(|(name, vars)| {
                (
                    name.to_string(),
                    TemplateInfo {
                        variables: vars.iter().map(|v| v.to_string()).collect(),
                        asks: asks_of(name),
                        choice_ids: name
                            .ends_with("_buttons")
                            .then(|| ["pay".to_owned(), "back".to_owned()].into()),
                        opaque: false,
                        ..TemplateInfo::default()
                    },
                )
            })
            .collect(),
        incomplete_templates: false,
        incomplete_flows: false,
    };
    check(&[SourceFlows { file, ast }], &context).1
}

/// What a test template asks for, by its name: lists and buttons ask for a choice
/// (`job_categories`, `*_list`, `*_buttons`), `*_location` for a location, the rest nothing.
fn asks_of(name: &str) -> Asks {
    if name == "job_categories" || name.ends_with("_list") || name.ends_with("_buttons") {
        Asks::Choice
    } else if name.ends_with("_location") {
        Asks::Location
    } else {
        Asks::Nothing
    }
}

fn codes_of(diagnostics: &[Diagnostic]) -> Vec<&str> {
    diagnostics.iter().map(|d| d.code).collect()
}

#[test]
fn clean_flow_has_no_diagnostics() {
    let text = r#"
flow jobs {
  let cats = query "select id, name from job_categories"
  if cats is empty { reply no_jobs end }
  reply job_categories with categories = cats
  await choice -> job_list
}
flow job_list(choice) {
  let jobs = query "select * from jobs where category_id = $1" with choice.id
  set last_category = choice.id
  reply job_listings with jobs = jobs, category = session.last_category
  end
}
"#;
    let d = run(
        text,
        &[
            ("no_jobs", &[]),
            ("job_categories", &["categories"]),
            ("job_listings", &["jobs", "category"]),
        ],
    );
    assert!(d.is_empty(), "{d:#?}");
}

#[test]
fn reports_every_kind_of_reference_mistake_at_once() {
    let text = r#"
flow a {
  reply job_lst
  call b(1, 2)
}
flow b(x) {
  reply greet
  await text -> a
}
flow a { end }
"#;
    let d = run(text, &[("job_list", &[]), ("greet", &["name"])]);
    assert_eq!(
        codes_of(&d),
        vec!["E300", "E302", "E305", "E303", "E306"],
        "{d:#?}"
    );
    assert_eq!(d[1].help.as_deref(), Some("did you mean `job_list`?"));
}

#[test]
fn variables_must_be_defined_before_use() {
    let text = r#"
flow a(input) {
  if jobs is empty { end }
  let jobs = query "select 1"
  if inptu.text == "x" { end }
  if session.never_set is empty { end }
  end
}
"#;
    let d = run(text, &[]);
    assert_eq!(codes_of(&d), vec!["E304", "E304", "E304"], "{d:#?}");
    assert_eq!(d[1].help.as_deref(), Some("did you mean `input`?"));
}

#[test]
fn let_inside_a_branch_does_not_leak() {
    let text = "flow a { if true { let x = query \"select 1\" } if x is empty { end } }";
    assert_eq!(codes_of(&run(text, &[])), vec!["E304"]);
}

#[test]
fn warns_on_statements_after_end_and_unused_bindings() {
    let text = "flow a { reply t with extra = 1 end reply t }";
    let d = run(text, &[("t", &[])]);
    assert_eq!(codes_of(&d), vec!["W101", "W102"], "{d:#?}");
}

#[test]
fn sql_placeholders_must_match_bound_values() {
    let text = r#"flow a(x) {
  let r = query "select $1, $2" with x
  let s = query "select $2" with x, x
  exec "update t set a = 1" with x
}"#;
    let d = run(text, &[]);
    assert_eq!(codes_of(&d), vec!["E307", "E307", "E307"], "{d:#?}");
}

#[test]
fn param_fields_lists_what_a_flow_reads_from_a_parameter() {
    let text = "flow paid(sms) { if sms.amount > 0 and sms.txid is not empty { exec \"select $1\" with sms.phone } }";
    let mut sources = Sources::new();
    let file = sources.add("t.flow", text);
    let ast = parse_flow_file(text, file).expect("parses");
    let fields: Vec<&str> = param_fields(&ast.flows[0], "sms")
        .iter()
        .map(|i| i.node.as_str())
        .collect();
    assert_eq!(fields, vec!["amount", "txid", "phone"]);
}

#[test]
fn what_a_reply_asks_is_what_the_flow_awaits_on_every_path() {
    let templates: &[(&str, &[&str])] = &[
        ("jobs_list", &[]),
        ("confirm_buttons", &[]),
        ("pickup_location", &[]),
        ("thanks", &[]),
    ];
    let flows = |body: &str| {
        format!("flow a {{\n{body}\n}}\nflow next(answer) {{ set last = answer\nend }}\n")
    };
    let cases: &[(&str, &[&str])] = &[
        ("reply jobs_list\nawait choice -> next", &[]),
        ("reply pickup_location\nawait location -> next", &[]),
        ("reply thanks\nawait text -> next", &[]),
        // The caller may have asked: nothing said here, nothing judged.
        ("await choice -> next", &[]),
        // A call hands the conversation on.
        ("reply jobs_list\ncall next(null)", &[]),
        ("reply jobs_list\nend", &["E314"]),
        ("reply confirm_buttons", &["E314"]),
        ("reply pickup_location\nreply thanks\nend", &["E314"]),
        ("reply jobs_list\nawait text -> next", &["E315"]),
        ("reply thanks\nawait choice -> next", &["E315"]),
        ("reply jobs_list\nawait location -> next", &["E315"]),
        // Only the branch that forgets its await is wrong.
        (
            "if true { reply jobs_list\nawait choice -> next }\nreply confirm_buttons\nend",
            &["E314"],
        ),
        (
            "if true { reply jobs_list } else { reply thanks }\nawait choice -> next",
            &[],
        ),
        (
            "if true { reply thanks\nend }\nreply jobs_list\nawait choice -> next",
            &[],
        ),
    ];
    for (body, expected) in cases {
        let diagnostics = run(&flows(body), templates);
        assert_eq!(&codes_of(&diagnostics), expected, "{body}");
    }
}

#[test]
fn a_choice_is_compared_only_with_ids_its_buttons_send() {
    let templates: &[(&str, &[&str])] = &[("confirm_buttons", &[]), ("jobs_list", &[])];
    let text = r#"
flow confirm {
  reply confirm_buttons
  await choice -> confirmed
}
flow confirmed(choice) {
  if choice.id == "Pay" { end }
  if "back" == choice.id { end }
  if choice.id != "cancel" { end }
  end
}
flow listed {
  reply jobs_list
  await choice -> picked
}
flow picked(choice) {
  if choice.id == "anything" { end }
  end
}
"#;
    let diagnostics = run(text, templates);
    assert_eq!(codes_of(&diagnostics), ["E316", "E316"], "{diagnostics:#?}");
    assert!(diagnostics[0]
        .message
        .contains("`choice.id` is never \"Pay\": `confirm_buttons` sends back, pay"));
    assert_eq!(
        diagnostics[0].help.as_deref(),
        Some("did you mean `pay`? ids are compared exactly")
    );
    assert!(diagnostics[1].message.contains("\"cancel\""));
}

#[test]
fn a_handler_that_never_reads_its_answer_is_warned_once() {
    let text = r#"
flow pay {
  reply pay_buttons
  await choice -> paid
}
flow again {
  reply pay_buttons
  await choice -> paid
}
flow paid(choice) {
  reply done
  end
}
flow ask_name {
  reply what_name
  await text -> named
}
flow named(answer) {
  set name = answer.text
  end
}
"#;
    let diagnostics = run(
        text,
        &[("pay_buttons", &[]), ("done", &[]), ("what_name", &[])],
    );
    assert_eq!(codes_of(&diagnostics), ["W111"], "{diagnostics:#?}");
    let message = &diagnostics[0].message;
    assert!(
        message.contains("`paid`") && message.contains("tap"),
        "{message}"
    );
}

#[test]
fn passing_the_answer_on_counts_as_reading_it() {
    let text = r#"
flow pay {
  reply pay_buttons
  await choice -> paid
}
flow paid(choice) {
  call record(choice)
}
flow record(tap) {
  set last = tap.id
  end
}
"#;
    let diagnostics = run(text, &[("pay_buttons", &[])]);
    assert!(codes_of(&diagnostics).is_empty(), "{diagnostics:#?}");
}
