//! Runs the order-status bot (see `bot.rs`):
//!
//! ```sh
//! BOTLINKD_APP_KEY=… BOTLINKD_AUTH_KEY=… BOTLINKD_WEBHOOK_SECRET=whsec_… \
//!   cargo run --example order_bot -- 127.0.0.1:3000
//! ```
//!
//! then point a botlinkd webhook at `http://127.0.0.1:3000/webhook` (with the server started
//! with `--webhook-allow-cidrs 127.0.0.0/8`), or use `botlinkd listen --forward-to …`.

mod bot;

fn required(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        eprintln!("set {name}");
        std::process::exit(2);
    })
}

#[tokio::main]
async fn main() {
    let listen = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:3000".into());
    let config = bot::BotConfig {
        botlinkd: std::env::var("BOTLINKD_SERVER").unwrap_or_else(|_| "http://127.0.0.1:8080".into()),
        app_key: required("BOTLINKD_APP_KEY"),
        auth_key: required("BOTLINKD_AUTH_KEY"),
        webhook_secret: required("BOTLINKD_WEBHOOK_SECRET"),
    };
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .expect("the listen address is free");
    println!("order bot listening on http://{listen}/webhook");
    axum::serve(listener, bot::router(config)).await.expect("serving");
}
