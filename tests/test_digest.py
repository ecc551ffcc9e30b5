"""The one Digest computation (server and client share it): RFC 2617 section 3.5's example."""

from mjpeg_rtsp.auth import digest_ha1, digest_response


def test_rfc2617_example_with_qop_auth() -> None:
    ha1 = digest_ha1("Mufasa", "testrealm@host.com", "Circle Of Life")
    response = digest_response(ha1, "GET", "/dir/index.html",
                               "dcd98b7102dd2f0e8b11d0f600bfb0c093", "auth", "00000001",
                               "0a4f113b")
    assert response == "6629fae49393a05397450978507c4ef1"


def test_without_qop_it_is_md5_of_ha1_nonce_ha2() -> None:
    # RFC 2069 form, MD5(HA1:nonce:MD5(method:uri)); the values were computed once by hand.
    ha1 = digest_ha1("alice", "mjpeg-rtsp", "secret")
    assert ha1 == "29f15c3e8b51d454743149a8428638aa"
    assert digest_response(ha1, "DESCRIBE", "rtsp://h/x", "n") == (
        "ebc11414757a57784a274ce1e6e07113")
