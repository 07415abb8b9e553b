//! Starts each real peer, talks to it through the client the services use,
//! and checks that nothing is left running afterwards.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use kisum_testkit::{Mongo, Postgres, Redis, process_alive};
use mongodb::bson::{Document, doc};
use redis::AsyncCommands;
use sqlx::{Connection, PgConnection, Row};

/// Waits (bounded) until `pid` has exited.
fn gone_within(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if !process_alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    !process_alive(pid)
}

async fn sql_round_trip(url: &str) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect(url).await?;
    let one: i32 = sqlx::query_scalar("select 1").fetch_one(&mut conn).await?;
    assert_eq!(one, 1);
    sqlx::query("create table t (id int primary key, name text not null)")
        .execute(&mut conn)
        .await?;
    sqlx::query("insert into t values (1, 'one'), (2, 'two')")
        .execute(&mut conn)
        .await?;
    let rows = sqlx::query("select id, name from t order by id")
        .fetch_all(&mut conn)
        .await?;
    let got: Vec<(i32, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got, vec![(1, "one".to_owned()), (2, "two".to_owned())]);
    conn.close().await?;
    Ok(())
}

#[tokio::test]
async fn postgres_round_trip_and_cleanup() -> anyhow::Result<()> {
    let t0 = Instant::now();
    let pg = Postgres::start().await?;
    eprintln!("postgres started in {:?}", t0.elapsed());
    assert!(
        pg.url("postgres")
            .starts_with("postgres://kisum@127.0.0.1:")
    );

    sql_round_trip(&pg.url("postgres")).await?;
    pg.create_database("app").await?;
    sql_round_trip(&pg.url("app")).await?;
    assert!(pg.create_database("bad name; drop").await.is_err());

    let pid = pg.pid().expect("postmaster.pid");
    let dir = pg.data_dir().parent().expect("temp dir").to_path_buf();
    assert!(process_alive(pid));
    drop(pg);
    assert!(
        gone_within(pid, Duration::from_secs(10)),
        "postmaster {pid} still running"
    );
    assert!(!dir.exists(), "{} not removed", dir.display());
    Ok(())
}

#[tokio::test]
async fn postgres_shared_gives_each_test_a_database() -> anyhow::Result<()> {
    let pg = Postgres::shared();
    assert!(std::ptr::eq(pg, Postgres::shared()));
    let a = pg.create_unique_database("shared test").await?;
    let b = pg.create_unique_database("shared test").await?;
    assert_ne!(a, b);
    sql_round_trip(&a).await?;
    sql_round_trip(&b).await?;
    Ok(())
}

#[tokio::test]
async fn postgres_shared_from_another_test() -> anyhow::Result<()> {
    let url = Postgres::shared().create_unique_database("other").await?;
    sql_round_trip(&url).await
}

/// Run only as a child of `shared_postgres_stops_when_the_process_exits`:
/// starts the shared server, prints where it is, and returns; the process
/// then exits without dropping it.
#[test]
#[ignore = "helper: run by shared_postgres_stops_when_the_process_exits"]
fn shared_postgres_child() {
    let pg = Postgres::shared();
    println!(
        "SHARED {} {}",
        pg.pid().expect("postmaster.pid"),
        pg.data_dir().display()
    );
}

#[test]
fn shared_postgres_stops_when_the_process_exits() {
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "shared_postgres_child",
            "--ignored",
            "--nocapture",
        ])
        .output()
        .expect("running the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("SHARED "))
        .unwrap_or_else(|| panic!("no SHARED line in:\n{stdout}"));
    let (pid, data) = line.split_once(' ').expect("pid and dir");
    let pid: u32 = pid.parse().expect("pid");
    let data = PathBuf::from(data);
    assert!(
        gone_within(pid, Duration::from_secs(15)),
        "postmaster {pid} outlived its test process"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while data.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!data.exists(), "{} not removed", data.display());
}

#[tokio::test]
async fn redis_round_trip_stop_restart_and_cleanup() -> anyhow::Result<()> {
    let t0 = Instant::now();
    let mut rd = Redis::start().await?;
    eprintln!("redis started in {:?}", t0.elapsed());
    let port = rd.port();
    let client = redis::Client::open(rd.url())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let _: () = conn.set("greeting", "hello").await?;
    let got: String = conn.get("greeting").await?;
    assert_eq!(got, "hello");

    // Degraded: the server goes away mid-test.
    let first_pid = rd.pid().expect("running");
    rd.stop();
    assert!(!rd.is_running());
    assert!(!process_alive(first_pid));
    let failed: redis::RedisResult<String> = conn.get("greeting").await;
    assert!(failed.is_err(), "GET succeeded with the server stopped");
    assert!(client.get_multiplexed_async_connection().await.is_err());

    // Back on the same port, empty (nothing is persisted).
    rd.restart().await?;
    assert_eq!(rd.port(), port);
    let mut conn = client.get_multiplexed_async_connection().await?;
    let missing: Option<String> = conn.get("greeting").await?;
    assert_eq!(missing, None);
    let _: () = conn.set("greeting", "again").await?;
    let got: String = conn.get("greeting").await?;
    assert_eq!(got, "again");

    let pid = rd.pid().expect("running");
    let dir = rd.dir().to_path_buf();
    drop(rd);
    assert!(!process_alive(pid), "redis-server {pid} still running");
    assert!(!dir.exists());
    Ok(())
}

/// The peers a helper child starts, printed as one line for its parent.
async fn start_all_and_report() -> (Postgres, Redis, Mongo) {
    let (pg, rd, mongo) = tokio::join!(Postgres::start(), Redis::start(), Mongo::start());
    let (pg, rd, mongo) = (pg.unwrap(), rd.unwrap(), mongo.unwrap());
    println!(
        "PEERS {} {} {} {} {}",
        pg.pid().unwrap(),
        rd.pid().unwrap(),
        mongo.pid().unwrap(),
        pg.data_dir().display(),
        rd.dir().display()
    );
    (pg, rd, mongo)
}

/// Runs one ignored helper test of this binary in a child process; returns
/// the child and the pids and directories of its `PEERS` line.
fn spawn_helper(name: &str) -> (std::process::Child, Vec<u32>, Vec<PathBuf>) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", name, "--ignored", "--nocapture"])
        .env("RUST_BACKTRACE", "0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("running the test binary");
    let stdout = child.stdout.take().expect("piped");
    // Ends at the PEERS line or when the child exits.
    let line = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("PEERS ").map(str::to_owned))
        .unwrap_or_else(|| panic!("{name}: no PEERS line"));
    let fields: Vec<&str> = line.split(' ').collect();
    let pids = fields[..3]
        .iter()
        .map(|p| p.parse().expect("pid"))
        .collect();
    let dirs = fields[3..].iter().map(PathBuf::from).collect();
    (child, pids, dirs)
}

fn assert_all_gone(pids: &[u32], dirs: &[PathBuf]) {
    for (pid, what) in pids
        .iter()
        .zip(["postmaster", "redis-server", "mongoeco launcher"])
    {
        assert!(
            gone_within(*pid, Duration::from_secs(15)),
            "{what} {pid} still running"
        );
    }
    for dir in dirs {
        let deadline = Instant::now() + Duration::from_secs(5);
        while dir.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!dir.exists(), "{} not removed", dir.display());
    }
}

#[tokio::test]
#[ignore = "helper: run by peers_stop_when_a_test_panics"]
async fn helper_panics_with_peers_running() {
    let _peers = start_all_and_report().await;
    panic!("the test body fails while its peers run");
}

#[tokio::test]
#[ignore = "helper: run by peers_stop_when_the_test_process_is_killed"]
async fn helper_waits_to_be_killed() {
    let _peers = start_all_and_report().await;
    // The parent kills this process; bounded in case it does not.
    tokio::time::sleep(Duration::from_secs(60)).await;
}

#[test]
fn peers_stop_when_a_test_panics() {
    let (mut child, pids, dirs) = spawn_helper("helper_panics_with_peers_running");
    let status = child.wait().expect("waiting for the helper");
    assert!(!status.success(), "the helper test was meant to fail");
    // Drop ran while unwinding: gone by the time the process exits.
    for pid in &pids {
        assert!(!process_alive(*pid), "{pid} survived the panic");
    }
    assert_all_gone(&pids, &dirs);
}

#[test]
fn peers_stop_when_the_test_process_is_killed() {
    let (mut child, pids, dirs) = spawn_helper("helper_waits_to_be_killed");
    child.kill().expect("SIGKILL to the helper");
    child.wait().expect("reaping the helper");
    // No Drop ran: the watchdogs (and the launcher's stdin) did the work.
    assert_all_gone(&pids, &dirs);
}

#[tokio::test]
async fn mongo_round_trip_in_batches_and_cleanup() -> anyhow::Result<()> {
    let t0 = Instant::now();
    let mongo = Mongo::start().await?;
    eprintln!("mongoeco started in {:?}", t0.elapsed());
    let client = mongodb::Client::with_uri_str(mongo.url()).await?;
    let db = client.database("kisum_test");
    let coll = db.collection::<Document>("items");

    let docs: Vec<Document> = (0..1000)
        .map(|i| doc! { "i": i, "name": format!("item-{i}"), "big": i64::from(i) << 33 })
        .collect();
    let t1 = Instant::now();
    let inserted = coll.insert_many(docs).await?;
    assert_eq!(inserted.inserted_ids.len(), 1000);
    eprintln!("1000 inserts in {:?}", t1.elapsed());
    assert_eq!(coll.count_documents(doc! {}).await?, 1000);

    // Through the driver: find in batches of 100 (find + 9 getMore).
    let mut cursor = coll
        .find(doc! {})
        .sort(doc! { "i": 1 })
        .batch_size(100)
        .await?;
    let mut n = 0;
    while cursor.advance().await? {
        let d = cursor.deserialize_current()?;
        assert_eq!(d.get_i32("i")?, n);
        assert_eq!(d.get_i64("big")?, i64::from(n) << 33);
        n += 1;
    }
    assert_eq!(n, 1000);

    // The same, command by command, to see the batches themselves.
    let first = db
        .run_command(doc! { "find": "items", "sort": { "i": 1 }, "batchSize": 100_i64 })
        .await?;
    let cur = first.get_document("cursor")?;
    let id = cur.get_i64("id")?;
    assert_ne!(id, 0);
    let mut batches = vec![cur.get_array("firstBatch")?.len()];
    for _ in 0..20 {
        let more = db
            .run_command(doc! { "getMore": id, "collection": "items", "batchSize": 100_i64 })
            .await?;
        let cur = more.get_document("cursor")?;
        batches.push(cur.get_array("nextBatch")?.len());
        if cur.get_i64("id")? == 0 {
            break;
        }
    }
    assert_eq!(batches.iter().sum::<usize>(), 1000);
    assert!(batches.iter().all(|&b| b <= 100), "{batches:?}");

    // killCursors with the Int64 id the driver sends.
    let open = db
        .run_command(doc! { "find": "items", "batchSize": 10_i64 })
        .await?;
    let open_id = open.get_document("cursor")?.get_i64("id")?;
    let killed = db
        .run_command(doc! { "killCursors": "items", "cursors": [open_id] })
        .await?;
    assert_eq!(killed.get_array("cursorsKilled")?.len(), 1, "{killed:?}");

    // An error reply without a code gets one the driver can parse.
    let err = db
        .run_command(doc! { "createUser": "u", "pwd": "p", "roles": [] })
        .await
        .expect_err("mongoeco has no user management");
    eprintln!("createUser: {err}");
    match *err.kind {
        mongodb::error::ErrorKind::Command(ref e) => assert_ne!(e.code, 0, "{e:?}"),
        ref other => panic!("not a command error: {other:?}"),
    }

    // A cursor dropped half-way (the driver then sends killCursors).
    {
        let mut c = coll.find(doc! {}).batch_size(100).await?;
        assert!(c.advance().await?);
    }

    // Aggregate through a cursor.
    let mut agg = coll
        .aggregate(vec![
            doc! { "$match": { "i": { "$gte": 500 } } },
            doc! { "$group": { "_id": null, "n": { "$sum": 1 } } },
        ])
        .batch_size(100)
        .await?;
    assert!(agg.advance().await?);
    assert_eq!(agg.deserialize_current()?.get_i32("n")?, 500);

    // Indexes and collections.
    coll.create_index(
        mongodb::IndexModel::builder()
            .keys(doc! { "name": 1 })
            .options(
                mongodb::options::IndexOptions::builder()
                    .unique(true)
                    .build(),
            )
            .build(),
    )
    .await?;
    let mut names = Vec::new();
    let mut indexes = coll.list_indexes().await?;
    while indexes.advance().await? {
        let model = indexes.deserialize_current()?;
        names.push(model.options.and_then(|o| o.name).unwrap_or_default());
    }
    names.sort();
    assert_eq!(names, vec!["_id_".to_owned(), "name_1".to_owned()]);
    assert_eq!(db.list_collection_names().await?, vec!["items".to_owned()]);

    // An error reply still parses (a duplicate key on the unique index).
    let dup = coll.insert_one(doc! { "i": -1, "name": "item-1" }).await;
    assert!(dup.is_err());

    let pid = mongo.pid().expect("running");
    drop(client);
    drop(mongo);
    assert!(!process_alive(pid), "mongoeco launcher {pid} still running");
    Ok(())
}

#[tokio::test]
async fn a_missing_program_is_named_with_the_install_command() {
    let err = match Mongo::start_with_python("/nonexistent/venv/bin/python").await {
        Ok(_) => panic!("started without a Python"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("/nonexistent/venv/bin/python"), "{err}");
    assert!(err.contains("bash scripts/peers.sh"), "{err}");
}
