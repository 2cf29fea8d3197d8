//! Every SOCKS5 message reader on arbitrary bytes: none may panic, hang or
//! allocate without bound, and a request that parses must re-encode to
//! exactly the bytes it was read from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socksbalance::socks5;

fuzz_target!(|data: &[u8]| {
    smol::block_on(async {
        let _ = socks5::read_greeting(&mut &data[..]).await;
        let _ = socks5::read_method_choice(&mut &data[..]).await;
        let _ = socks5::read_user_pass(&mut &data[..]).await;
        let _ = socks5::read_auth_status(&mut &data[..]).await;
        let _ = socks5::read_reply(&mut &data[..]).await;

        let mut rest = data;
        if let Ok(request) = socks5::read_request(&mut rest).await {
            let consumed = &data[..data.len() - rest.len()];
            // CONNECT with a zero RSV byte is the one canonical encoding.
            if consumed[1] == 0x01 && consumed[2] == 0x00 {
                let mut again = Vec::new();
                socks5::write_connect(&mut again, &request.address).await.unwrap();
                assert_eq!(again, consumed, "request did not round-trip");
            }
        }
    });
});
