//! A product team adds a service with its own table (school fees, a `schools` table) without a
//! rebuild: a migration beside routes.yaml, `easymo migrate`, and the engine serves it; before
//! the migration, `easymo serve` refuses to start.

use std::time::Duration;

use crate::support::{
    easymo, engine_env, fresh_database, signed_whatsapp, text_delivery, ConfigDir, Engine,
};

const SCHOOLS: &str = "create table schools (
    id serial primary key,
    name text not null,
    term_fee integer not null
);
insert into schools (name, term_fee) values ('Kigali Parents School', 150000), ('Lycée de Kigali', 90000);
";

/// The shipped config with a school-fees service whose table comes from `db/`.
fn school_fees() -> ConfigDir {
    let config = ConfigDir::shipped(|t| {
        let with_route = t
            .replace(
                "  max_body_bytes: 3145728\n",
                "  max_body_bytes: 3145728\n  migrations: db\n",
            )
            .replace(
                "  - flows/language.flow\n",
                "  - flows/language.flow\n  - flows/school_fees.flow\n",
            )
            .replace(
                "      routes:\n",
                "      routes:\n        - keywords: {en: [school fees], fr: [frais scolaires], rw: [amafaranga y'ishuri]}\n          flow: school_fees\n",
            )
            .replace(
                "\ntemplates:\n",
                "\ntemplates:\n  school_fees:\n    text:\n      body:\n        en: \"Term fees:{% for s in schools %}\\n{{ s.name }}: {{ s.term_fee }} RWF{% endfor %}\"\n        fr: \"Frais par trimestre :{% for s in schools %}\\n{{ s.name }} : {{ s.term_fee }} RWF{% endfor %}\"\n        rw: \"Amafaranga y'igihembwe:{% for s in schools %}\\n{{ s.name }}: {{ s.term_fee }} RWF{% endfor %}\"\n",
            );
        assert!(with_route.contains("flow: school_fees"));
        assert!(with_route.contains("migrations: db"));
        with_route
    });
    std::fs::write(
        config.dir.join("flows/school_fees.flow"),
        "# School fees: every school and its term fee.\nflow school_fees {\n  let schools = query \"select name, term_fee from schools order by name\"\n  reply school_fees with schools = schools\n  end\n}\n",
    )
    .expect("flow written");
    std::fs::create_dir_all(config.dir.join("db")).expect("db dir");
    std::fs::write(config.dir.join("db/20261206090000_schools.sql"), SCHOOLS)
        .expect("migration written");
    config
}

#[test]
fn a_new_table_beside_routes_yaml_is_migrated_and_served_without_a_rebuild() {
    let config = school_fees();
    let routes = config.routes();
    let routes = routes.to_str().expect("utf-8 path");
    // As a product team does after adding a query: describe it once with a database, commit
    // `.queries/`, and lint offline from then on.
    let server = crate::support::server_url();
    let described = easymo(
        &["lint", routes, "--database-url", &server, "--write-offline"],
        &[],
    );
    assert!(
        described.status.success(),
        "{}{}",
        String::from_utf8_lossy(&described.stdout),
        String::from_utf8_lossy(&described.stderr)
    );
    assert!(config.dir.join(".queries").is_dir());
    let lint = easymo(&["lint", routes, "--deny-warnings"], &[]);
    assert!(
        lint.status.success(),
        "{}",
        String::from_utf8_lossy(&lint.stdout)
    );
    let database_url = fresh_database();
    let mut env = engine_env();
    env.retain(|(k, _)| *k != "DATABASE_URL");
    env.push(("DATABASE_URL", &database_url));

    // Before `easymo migrate`, serving is refused, saying why.
    let refused = easymo(
        &["serve", "--config", routes, "--listen", "127.0.0.1:0"],
        &env,
    );
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("1 product migration(s) not applied") && said.contains("easymo migrate"),
        "{said}"
    );

    let migrated = easymo(
        &[
            "migrate",
            "--config",
            routes,
            "--database-url",
            &database_url,
        ],
        &[],
    );
    let said = String::from_utf8_lossy(&migrated.stderr);
    assert!(migrated.status.success(), "{said}");
    assert!(said.contains("1 migration(s) applied"), "{said}");

    let engine = Engine::start_on(&config, "127.0.0.1:0", &env);
    let body = text_delivery("250788000401", "wamid.school-fees-1", "frais scolaires");
    assert_eq!(signed_whatsapp(engine.addr, &body).status, 200);
    let replies = engine.rows_when(
        "select body->'text'->>'body' as text from outbox where template = 'school_fees'",
        Duration::from_secs(5),
        "the school fees reply",
        |rows| rows.as_array().is_some_and(|r| !r.is_empty()),
    );
    assert_eq!(
        replies[0]["text"],
        "Frais par trimestre :\nKigali Parents School : 150000 RWF\nLycée de Kigali : 90000 RWF"
    );
}

#[test]
fn a_product_migration_numbered_like_the_engines_is_refused() {
    let config = school_fees();
    std::fs::write(config.dir.join("db/0003_schools.sql"), SCHOOLS).expect("written");
    let routes = config.routes();
    let database_url = fresh_database();
    let out = easymo(
        &[
            "migrate",
            "--config",
            routes.to_str().expect("utf-8 path"),
            "--database-url",
            &database_url,
        ],
        &[],
    );
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("version 3 is in the engine's range") && said.contains("20261206090000"),
        "{said}"
    );
}
