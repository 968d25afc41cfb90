//! TLS: the client verifies the server against the given CA and presents its certificate.

use doozer_client::fake::{write_test_certs, FakeCluster};
use doozer_client::{Client, ClientError, ClientOptions, TlsOptions};

fn opts(tls: TlsOptions) -> ClientOptions {
    ClientOptions {
        tls: Some(tls),
        ..ClientOptions::default()
    }
}

#[tokio::test]
async fn mutual_tls_round_trip_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let certs = write_test_certs(dir.path()).unwrap();
    let cluster = FakeCluster::new();
    let server = cluster
        .start_tls(&certs.server_cert, &certs.server_key, Some(&certs.ca))
        .await
        .unwrap();
    let good = TlsOptions {
        ca_file: certs.ca.clone(),
        cert_file: Some(certs.client_cert.clone()),
        key_file: Some(certs.client_key.clone()),
        server_name: None,
    };
    let c = Client::connect_with(&server.uri(), opts(good.clone()))
        .await
        .unwrap();
    let rev = c.set("/tls", 0, "secret").await.unwrap();
    assert_eq!(c.get("/tls", None).await.unwrap(), ("secret".into(), rev));

    // A server certificate from another CA is refused at connect time.
    let other_dir = tempfile::tempdir().unwrap();
    let other = write_test_certs(other_dir.path()).unwrap();
    let wrong_ca = TlsOptions {
        ca_file: other.ca.clone(),
        ..good.clone()
    };
    let err = Client::connect_with(&server.uri(), opts(wrong_ca))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Connect { source, .. } if source.to_string().contains("certificate")),
        "{err:?}"
    );

    // A name the certificate does not carry is refused too.
    let wrong_name = TlsOptions {
        server_name: Some("example.com".into()),
        ..good.clone()
    };
    assert!(matches!(
        Client::connect_with(&server.uri(), opts(wrong_name)).await,
        Err(ClientError::Connect { .. })
    ));

    // Without a client certificate the server ends the session: no call succeeds.
    let anonymous = TlsOptions {
        cert_file: None,
        key_file: None,
        ..good.clone()
    };
    let fast = ClientOptions {
        timeout: Some(std::time::Duration::from_millis(500)),
        ..opts(anonymous)
    };
    match Client::connect_with(&server.uri(), fast).await {
        Err(_) => {}
        Ok(c) => assert!(c.rev().await.is_err()),
    }

    // Half a client identity is a configuration error, before any connection.
    let half = TlsOptions {
        key_file: None,
        ..good
    };
    assert!(matches!(
        Client::connect_with(&server.uri(), opts(half)).await,
        Err(ClientError::Tls(_))
    ));
}
