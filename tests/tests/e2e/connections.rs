//! Silent and half-open sockets cannot lock real clients out: the gRPC listener keeps at most `max_connections`
//! open (one more is closed at once), and a connection that has sent nothing within the handshake timeout is
//! closed, while a client that is talking keeps its connection. Judged from the sockets themselves.

use std::time::Duration;

use tablecrypt_proto::v1 as pb;
use tablecrypt_tests::{TestApp, TestDatabase};
use tokio::net::TcpStream;

/// Whether the server closed `socket`: reading it (past whatever the server wrote, such as HTTP/2's settings)
/// comes to the end or to a reset within a moment.
async fn closed_by_server(socket: &TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        if tokio::time::timeout(Duration::from_millis(50), socket.readable())
            .await
            .is_err()
        {
            return false;
        }
        match socket.try_read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return true,
        }
    }
}

async fn still_open(sockets: &[TcpStream]) -> usize {
    let mut open = 0;
    for socket in sockets {
        if !closed_by_server(socket).await {
            open += 1;
        }
    }
    open
}

#[tokio::test]
async fn silent_sockets_are_capped_and_closed_so_real_clients_get_in() {
    let db = TestDatabase::create().await.expect("db");
    let app = TestApp::spawn_with(
        &db,
        "max_connections = 8\nconnection_handshake_timeout = '1s'",
    )
    .await
    .expect("server");
    // The test's own client holds one of the 8 connections. 50 silent sockets: at most 7 are kept.
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(TcpStream::connect(app.addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let open = still_open(&silent).await;
    assert!(
        (1..=7).contains(&open),
        "{open} of 50 silent sockets held open (the cap leaves 7)"
    );

    // After the handshake timeout none is held, and the client that talks was never cut.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        still_open(&silent).await,
        0,
        "silent sockets outlived the handshake timeout"
    );
    app.client
        .clone()
        .list_accounts(pb::ListAccountsRequest::default())
        .await
        .expect("the talking client kept its connection");

    // A new client gets in once the silent ones are gone.
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
        .expect("uri")
        .connect()
        .await
        .expect("a new client connects");
    tablecrypt_proto::v1::table_encryption_client::TableEncryptionClient::new(channel)
        .list_accounts(pb::ListAccountsRequest::default())
        .await
        .expect("a new client is served");
    app.stop().await.expect("stop");
}
