//! The catalog: modules, packages (with their modules) and add-ons (each
//! granting one module). A catalog write bumps the entitlement version of
//! every company it affects, in its own transaction.

use std::collections::BTreeMap;

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::entitlements::{Actor, CompanyChange, Record};
use crate::error::CoreError;
use crate::model::{
    AddOn, AddOnDefinition, Catalog, CatalogChange, EntitlementVersion, Module, Package,
    PackageRequest, validate_key, validate_name,
};

pub async fn read(pool: &PgPool) -> Result<Catalog, CoreError> {
    let modules: Vec<Module> = sqlx::query_as("SELECT key, name FROM modules ORDER BY key")
        .fetch_all(pool)
        .await?;
    let add_ons: Vec<AddOn> = sqlx::query_as("SELECT key, name, module FROM add_ons ORDER BY key")
        .fetch_all(pool)
        .await?;
    Ok(Catalog {
        modules,
        packages: packages(pool).await?,
        add_ons,
    })
}

async fn packages(pool: &PgPool) -> Result<Vec<Package>, CoreError> {
    let names: Vec<(String, String)> = sqlx::query_as("SELECT key, name FROM packages")
        .fetch_all(pool)
        .await?;
    let memberships: Vec<(String, String)> =
        sqlx::query_as("SELECT package, module FROM package_modules ORDER BY module")
            .fetch_all(pool)
            .await?;
    let mut packages: BTreeMap<String, Package> = names
        .into_iter()
        .map(|(key, name)| {
            let package = Package {
                key: key.clone(),
                name,
                modules: Vec::new(),
            };
            (key, package)
        })
        .collect();
    for (package, module) in memberships {
        if let Some(package) = packages.get_mut(&package) {
            package.modules.push(module);
        }
    }
    Ok(packages.into_values().collect())
}

/// Creates a package, or replaces an existing package's name and modules
/// (bumping every company with an active subscription to it).
pub async fn put_package(
    pool: &PgPool,
    request: &PackageRequest,
    actor: &Actor,
) -> Result<CatalogChange<Package>, CoreError> {
    let modules = validate_package(request)?;
    let mut tx = pool.begin().await?;
    require_modules(&mut tx, &modules).await?;
    let created = lock_package(&mut tx, request).await?;
    let companies: Vec<Uuid> = sqlx::query_scalar(
        "SELECT company FROM company_subscriptions
          WHERE package = $1 AND status = 'active' ORDER BY company",
    )
    .bind(&request.key)
    .fetch_all(&mut *tx)
    .await?;
    let changes = begin_all(&mut tx, &companies).await?;
    replace_package(&mut tx, &request.key, &request.name, &modules).await?;
    let package = Package {
        key: request.key.clone(),
        name: request.name.clone(),
        modules,
    };
    let record = Record {
        actor,
        action: "catalog.package",
        subject: &request.key,
        detail: serde_json::to_value(&package).unwrap_or_default(),
    };
    let bumped = finish_all(&mut tx, changes, &record).await?;
    tx.commit().await?;
    Ok(CatalogChange {
        item: package,
        created,
        bumped,
    })
}

/// Creates an add-on, or replaces an existing add-on's name and module
/// (bumping every company that has it active).
pub async fn put_add_on(
    pool: &PgPool,
    request: &AddOnDefinition,
    actor: &Actor,
) -> Result<CatalogChange<AddOn>, CoreError> {
    validate_add_on(request)?;
    let mut tx = pool.begin().await?;
    require_modules(&mut tx, std::slice::from_ref(&request.module)).await?;
    let created = lock_add_on(&mut tx, request).await?;
    let companies: Vec<Uuid> = sqlx::query_scalar(
        "SELECT company FROM company_add_ons WHERE add_on = $1 AND active ORDER BY company",
    )
    .bind(&request.key)
    .fetch_all(&mut *tx)
    .await?;
    let changes = begin_all(&mut tx, &companies).await?;
    sqlx::query("UPDATE add_ons SET name = $2, module = $3, updated_at = now() WHERE key = $1")
        .bind(&request.key)
        .bind(&request.name)
        .bind(&request.module)
        .execute(&mut *tx)
        .await?;
    let add_on = AddOn {
        key: request.key.clone(),
        name: request.name.clone(),
        module: request.module.clone(),
    };
    let record = Record {
        actor,
        action: "catalog.add-on",
        subject: &request.key,
        detail: serde_json::to_value(&add_on).unwrap_or_default(),
    };
    let bumped = finish_all(&mut tx, changes, &record).await?;
    tx.commit().await?;
    Ok(CatalogChange {
        item: add_on,
        created,
        bumped,
    })
}

/// The package's modules, sorted and without duplicates.
fn validate_package(request: &PackageRequest) -> Result<Vec<String>, CoreError> {
    validate_key("package", &request.key)?;
    validate_name("package", &request.name)?;
    let mut modules = request.modules.clone();
    modules.sort();
    modules.dedup();
    if modules.is_empty() {
        return Err(CoreError::InvalidRequest(
            "a package needs at least one module".into(),
        ));
    }
    Ok(modules)
}

fn validate_add_on(request: &AddOnDefinition) -> Result<(), CoreError> {
    validate_key("add-on", &request.key)?;
    validate_name("add-on", &request.name)?;
    // Basic is what `core_app` means; an add-on granting it would give a
    // company the basic module without the Core App.
    if request.module == "basic" {
        return Err(CoreError::BasicAddOn);
    }
    Ok(())
}

async fn require_modules(
    connection: &mut PgConnection,
    modules: &[String],
) -> Result<(), CoreError> {
    let known: Vec<String> = sqlx::query_scalar("SELECT key FROM modules ORDER BY key")
        .fetch_all(connection)
        .await?;
    match modules.iter().find(|module| !known.contains(module)) {
        Some(unknown) => Err(CoreError::UnknownModule {
            name: unknown.clone(),
            known,
        }),
        None => Ok(()),
    }
}

/// Creates the package row if it is new and locks it; true when created.
async fn lock_package(
    connection: &mut PgConnection,
    request: &PackageRequest,
) -> Result<bool, CoreError> {
    let inserted = sqlx::query(
        "INSERT INTO packages (key, name) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
    )
    .bind(&request.key)
    .bind(&request.name)
    .execute(&mut *connection)
    .await?
    .rows_affected();
    sqlx::query("SELECT 1 FROM packages WHERE key = $1 FOR UPDATE")
        .bind(&request.key)
        .execute(connection)
        .await?;
    Ok(inserted == 1)
}

async fn lock_add_on(
    connection: &mut PgConnection,
    request: &AddOnDefinition,
) -> Result<bool, CoreError> {
    let inserted = sqlx::query(
        "INSERT INTO add_ons (key, name, module) VALUES ($1, $2, $3) ON CONFLICT (key) DO NOTHING",
    )
    .bind(&request.key)
    .bind(&request.name)
    .bind(&request.module)
    .execute(&mut *connection)
    .await?
    .rows_affected();
    sqlx::query("SELECT 1 FROM add_ons WHERE key = $1 FOR UPDATE")
        .bind(&request.key)
        .execute(connection)
        .await?;
    Ok(inserted == 1)
}

async fn replace_package(
    connection: &mut PgConnection,
    key: &str,
    name: &str,
    modules: &[String],
) -> Result<(), CoreError> {
    sqlx::query("UPDATE packages SET name = $2, updated_at = now() WHERE key = $1")
        .bind(key)
        .bind(name)
        .execute(&mut *connection)
        .await?;
    sqlx::query("DELETE FROM package_modules WHERE package = $1")
        .bind(key)
        .execute(&mut *connection)
        .await?;
    sqlx::query("INSERT INTO package_modules (package, module) SELECT $1, unnest($2::text[])")
        .bind(key)
        .bind(modules)
        .execute(connection)
        .await?;
    Ok(())
}

/// Bumps each company (in the order given: callers pass them sorted).
async fn begin_all(
    connection: &mut PgConnection,
    companies: &[Uuid],
) -> Result<Vec<CompanyChange>, CoreError> {
    let mut changes = Vec::with_capacity(companies.len());
    for company in companies {
        changes.push(CompanyChange::begin(connection, *company).await?);
    }
    Ok(changes)
}

async fn finish_all(
    connection: &mut PgConnection,
    changes: Vec<CompanyChange>,
    record: &Record<'_>,
) -> Result<Vec<EntitlementVersion>, CoreError> {
    let mut bumped = Vec::with_capacity(changes.len());
    for change in changes {
        let change = change.finish(connection, record).await?;
        bumped.push(EntitlementVersion {
            company: change.company,
            version: change.after.version,
        });
    }
    Ok(bumped)
}
