//! How long `easymo lint` (the same load-and-check path serving and reload use) takes on a
//! config far larger than easyMO's: 1,000 endpoints, 5,000 keyword routes, 1,000 flows in 20
//! files, 100 templates, every flow with its own query: loading and checking, then the checks
//! against the offline query descriptions and what templates read from them. With
//! `EASYMO_BENCH_DATABASE_URL` set, also describing all 1,000 queries on a throwaway database
//! (`easymo lint --database-url`). Run with `cargo bench -p easymo-engine --bench lint`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, Criterion};
use easymo_engine::config::{load_text, EnvPolicy, FileSource};
use easymo_engine::queries::{self, Column, Description};

const ENDPOINTS: usize = 1_000;
const ROUTES_PER_ENDPOINT: usize = 5;
const FLOWS: usize = 500;
const FLOW_FILES: usize = 20;
const TEMPLATES: usize = 100;

/// Flow files held in memory, so the benchmark measures lint, not the disk.
struct Memory(HashMap<PathBuf, String>);

impl FileSource for Memory {
    fn read(&self, path: &Path) -> std::io::Result<String> {
        self.0
            .get(path)
            .cloned()
            .ok_or_else(|| std::io::ErrorKind::NotFound.into())
    }
    fn flow_files_in(&self, _dir: &Path) -> Vec<PathBuf> {
        let flows = self
            .0
            .keys()
            .filter(|p| p.extension().is_some_and(|e| e == "flow"));
        flows.cloned().collect()
    }
}

fn generate() -> (String, Memory) {
    let migrations = std::env::temp_dir().join(format!("easymo-bench-lint-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&migrations);
    let _ = std::fs::write(
        migrations.join("20261206000000_items.sql"),
        "create table items (id bigserial primary key, kind text not null, name text not null, detail text not null, active boolean not null default true);\ncreate table picks (item text, who text);\n",
    );
    let mut yaml = format!("version: 1\nserver:\n  listen: 0.0.0.0:8080\n  trusted_proxies: [10.0.0.0/8]\n  database_url: ${{DATABASE_URL}}\n  migrations: {}\nflows:\n", migrations.display());
    for f in 0..FLOW_FILES {
        let _ = writeln!(yaml, "  - flows/f{f}.flow");
    }
    yaml.push_str("endpoints:\n");
    for e in 0..ENDPOINTS {
        let _ = write!(
            yaml,
            "  - name: wa-{e}\n    path: /wa/{e}\n    kind: whatsapp\n    verify_token: ${{VERIFY}}\n    auth:\n      hmac:\n        header: X-Hub-Signature-256\n        prefix: \"sha256=\"\n        secrets:\n          - ${{SECRET}}\n    rate_limit:\n      requests: 300\n      per: 60s\n    routing:\n      global:\n        - keywords: [menu]\n          flow: flow_0\n      routes:\n"
        );
        for r in 0..ROUTES_PER_ENDPOINT {
            let flow = (e * ROUTES_PER_ENDPOINT + r) % FLOWS;
            let _ = write!(
                yaml,
                "        - keywords: [service {r} of {e}, s{r}x{e}]\n          flow: flow_{flow}\n"
            );
        }
        yaml.push_str("      fallback: flow_0\n");
    }
    yaml.push_str("templates:\n");
    for t in 0..TEMPLATES {
        let _ = write!(
            yaml,
            "  list_{t}:\n    list:\n      body: {{en: \"Choose one, {{{{ contact.name | default('friend') }}}}\", rw: Hitamo, fr: Choisissez}}\n      button: {{en: Options, rw: Amahitamo, fr: Options}}\n      sections:\n        - rows_from: rows\n          row:\n            id: \"{{{{ row.id }}}}\"\n            title: \"{{{{ row.name }}}}\"\n            description: \"{{{{ row.detail }}}}\"\n"
        );
    }
    yaml.push_str("  something_went_wrong:\n    text:\n      body: {en: Sorry, rw: Mutubabarire, fr: Désolé}\n  unsupported_message:\n    text:\n      body: {en: Sorry, rw: Mutubabarire, fr: Désolé}\n");
    let mut files = HashMap::new();
    let per_file = FLOWS / FLOW_FILES;
    for f in 0..FLOW_FILES {
        let mut text = String::new();
        for i in f * per_file..(f + 1) * per_file {
            let _ = write!(
                text,
                "flow flow_{i} {{\n  let rows = query \"select id, name, detail from items where kind = $1 and active order by name limit {}\" with \"k{i}\"\n  if rows is empty {{\n    end\n  }}\n  set last = \"{i}\"\n  reply list_{} with rows = rows\n  await choice -> pick_{i}\n}}\n\nflow pick_{i}(choice) {{\n  exec \"insert into picks (item, who) values ($1, $2 || ':{i}')\" with choice.id, contact.wa_id\n  call flow_{}\n}}\n\n",
                30 + i,
                i % TEMPLATES,
                (i + 1) % FLOWS
            );
        }
        files.insert(PathBuf::from(format!("flows/f{f}.flow")), text);
    }
    (yaml, Memory(files))
}

fn lint_large_config(c: &mut Criterion) {
    let (yaml, files) = generate();
    let loaded = load_text(
        "routes.yaml",
        &yaml,
        Path::new(""),
        &EnvPolicy::Unchecked,
        &files,
    );
    assert!(
        loaded.diagnostics.is_empty(),
        "the generated config must be clean: {:?}",
        &loaded.diagnostics[..loaded.diagnostics.len().min(3)]
    );
    let config = loaded.config.as_ref().expect("loads");
    assert_eq!(config.endpoints.len(), ENDPOINTS);
    assert_eq!(
        config.flows.index.len(),
        FLOWS * 2,
        "1,000 flows: a menu flow and a choice flow each"
    );
    let routes: usize = config
        .endpoints
        .iter()
        .filter_map(|e| e.router.as_ref())
        .map(|r| r.keywords.len())
        .sum();
    assert!(routes >= ENDPOINTS * ROUTES_PER_ENDPOINT);

    let mut group = c.benchmark_group("lint");
    group.sample_size(10);
    group.bench_function("1000_endpoints_5000_routes_1000_flows", |b| {
        b.iter(|| {
            load_text(
                "routes.yaml",
                &yaml,
                Path::new(""),
                &EnvPolicy::Unchecked,
                &files,
            )
        })
    });
    // The offline descriptions as `--write-offline` would have left them.
    let found = queries::flow_queries(config, &loaded.sources);
    assert_eq!(found.len(), FLOWS * 2);
    let schema = queries::schema_fingerprint(config.server.migrations.as_deref());
    let column = |name: &str| Column {
        name: name.to_owned(),
        type_name: "text".to_owned(),
        nullable: Some(false),
    };
    let mut memory = files.0.clone();
    for query in &found {
        let description = Description {
            sql: query.sql.clone(),
            arguments: vec!["text".to_owned(); query.arguments.len()],
            schema: schema.clone(),
            parameters: vec!["text".to_owned(); query.arguments.len()],
            columns: ["id", "name", "detail"].map(column).to_vec(),
        };
        memory.insert(
            PathBuf::from(".queries").join(format!("query-{}.json", query.key())),
            serde_json::to_string_pretty(&description).expect("json"),
        );
    }
    let files = Memory(memory);
    let mut checked = load_text(
        "routes.yaml",
        &yaml,
        Path::new(""),
        &EnvPolicy::Unchecked,
        &files,
    );
    let descriptions =
        easymo_engine::lint::check_queries(&mut checked, Path::new(""), &files, None)
            .expect("checked")
            .expect("loaded");
    assert!(
        checked.diagnostics.is_empty(),
        "{:?}",
        &checked.diagnostics[..checked.diagnostics.len().min(3)]
    );
    assert_eq!(
        descriptions.len(),
        FLOWS * 2,
        "every flow's query is its own"
    );
    group.bench_function("with_offline_queries_and_template_fields", |b| {
        b.iter(|| {
            let mut loaded = load_text(
                "routes.yaml",
                &yaml,
                Path::new(""),
                &EnvPolicy::Unchecked,
                &files,
            );
            easymo_engine::lint::check_queries(&mut loaded, Path::new(""), &files, None)
        })
    });
    if let Ok(url) = std::env::var("EASYMO_BENCH_DATABASE_URL") {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        group.bench_function("describe_live_on_a_throwaway_database", |b| {
            b.iter(|| {
                let live = runtime
                    .block_on(queries::check_live(config, &loaded.sources, &url))
                    .expect("described");
                assert!(
                    live.diagnostics.is_empty(),
                    "{:?}",
                    live.diagnostics.first()
                );
                live.descriptions.len()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, lint_large_config);
criterion_main!(benches);
