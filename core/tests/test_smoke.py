def test_health_answers_ok_on_public(client, tenants):
    response = client.get("/api/health/")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
