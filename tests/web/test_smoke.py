from tests.conftest import login


def test_health_is_public(client):
    resp = client.get("/health")
    assert resp.status_code == 200
    assert resp.get_json() == {"status": "ok"}


def test_login_me_logout(client, make_user):
    make_user("amina", "doctor")
    login(client, "amina")
    me = client.get("/api/v1/auth/me").get_json()["user"]
    assert me["username"] == "amina" and me["roles"] == ["doctor"]
    assert client.post("/api/v1/auth/logout").status_code == 200
    assert client.get("/api/v1/auth/me").status_code == 401
