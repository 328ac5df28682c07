"""core.masking: credentials told by their shape, in run parameters (MR text) and in the
warnings a Prometheus quotes."""

from __future__ import annotations

import pytest

from promoter.core.masking import MASK, masked_value, secret_name, without_secret_params


@pytest.mark.parametrize(("value", "masked"), [
    ("--dsn=postgresql://h/db?password=SECRET", "--dsn=postgresql://h/db?password=***"),
    ("--endpoint=https://h/api?access_token=SECRET", "--endpoint=https://h/api?access_token=***"),
    ("url=https://x/y?token=abc", "url=https://x/y?token=***"),
    ("--url=https://h/p?sig=SECRET&sv=1", "--url=https://h/p?sig=***&sv=1"),
    ("--url=https://h/p?sv=1&sig=SECRET#part", "--url=https://h/p?sv=1&sig=***#part"),
    ("--a=1 --dsn=Server=db;Password=SECRET;", "--a=1 --dsn=Server=db;Password=***;"),
])
def test_a_credential_parameter_inside_another_parameters_value_is_masked(
        value: str, masked: str) -> None:
    """The value of a harmless name ("--url=") was taken whole, so the credential parameter
    inside it (the URL's sig=) was never looked at, though the same URL alone was masked."""
    assert masked_value("args", value) == masked
    assert without_secret_params(value) == masked      # as Prometheus warnings are masked


@pytest.mark.parametrize("value", [
    "--token-limit=5 --page=2", "max_tokens=512 tokenizer=gpt2", "--url=https://h/p?page=2&q=a",
    "--opts=num_tokens=5;token_limit=7", "data=YWJj==&x=1"])
def test_parameters_that_only_mention_a_credential_stay_readable(value: str) -> None:
    assert masked_value("args", value) == value


@pytest.mark.parametrize("name", [
    "HFTOKEN", "hftoken", "GITHUBTOKEN", "apitoken", "authtoken", "gcpcredentials",
    "awscredential"])
def test_a_name_ending_in_token_or_credential_is_a_credential(name: str) -> None:
    """One-word names ending in "token" were shown although "hftoken" was meant to be
    covered; "credential(s)" likewise."""
    assert secret_name(name)
    assert masked_value(name, "hf_AbCdEf") == MASK
    assert masked_value("args", f"--{name}=hf_AbCdEf --page=2") == f"--{name}=*** --page=2"


@pytest.mark.parametrize("name", ["max_tokens", "num_tokens", "tokenizer", "maxtokens",
                                  "tokenizer_name", "learning_rate"])
def test_names_that_only_mention_tokens_stay_readable(name: str) -> None:
    assert not secret_name(name)
    assert masked_value(name, "512") == "512"


@pytest.mark.parametrize(("text", "masked"), [
    ("host=db password='two words' dbname=x", "host=db password=*** dbname=x"),
    ("Server=db;Password=\"p w;d\";Database=x", "Server=db;Password=***;Database=x"),
    ("password='it\\'s here' sslmode=require", "password=*** sslmode=require"),
    ("password='never closed and more", "password=***"),
])
def test_a_quoted_credential_is_masked_whole(text: str, masked: str) -> None:
    """libpq keyword strings and connection strings quote a value holding spaces: the mask
    stopped at the first space, and the rest of the password ("words'") was quoted on."""
    from promoter.core.masking import without_password_params

    assert without_secret_params(text) == masked
    assert masked_value("dsn", text) == masked
    if text.lower().startswith(("host", "password")):
        assert without_password_params(text) == masked


@pytest.mark.parametrize(("text", "masked"), [
    ("dsn='host=db password=pw' ignored", "dsn='host=db password=***' ignored"),
    ('reason: "token=abc" denied', 'reason: "token=***" denied'),
    ("k='password=pw'", "k='password=***'"),
    ("password=ab' rest", "password=*** rest"),   # no quote opened before: all of it is value
])
def test_a_quote_closing_text_around_a_credential_stays(text: str, masked: str) -> None:
    """An unquoted credential inside quoted text took the closing quote with it, so the
    text around it lost its balance; masking the masked text again changes nothing."""
    assert without_secret_params(text) == masked
    assert without_secret_params(masked) == masked


@pytest.mark.parametrize(("text", "masked"), [
    ("you sent {\"Authorization\": \"Bearer tok-123456\", \"User-Agent\": \"x\"}",
     "you sent {\"Authorization\": \"***\", \"User-Agent\": \"x\"}"),
    ("{'Authorization': 'Basic dXNlcjpwYXNz'}", "{'Authorization': '***'}"),
    ("Authorization: Basic dXNlcjpwYXNz\nnext line", "Authorization: ***\nnext line"),
    ("Private-Token: glpat-abcdef123", "Private-Token: ***"),
    ("got Bearer eyJhbGciOi.abc.def back", "got Bearer *** back"),
    ("python -m x --hf-token hf_ABC --lr 0.1", "python -m x --hf-token *** --lr 0.1"),
    ('{"model": "x", "token_limit": 5, "db_password": "p w"}',
     '{"model": "x", "token_limit": 5, "db_password": "***"}'),
    # only mentioned, not carried: left as written
    ("basic authentication required", "basic authentication required"),
    ("Basic Authentication required", "Basic Authentication required"),
    ("curl -H 'Authorization: Bearer abcdefghij' https://h/x",
     "curl -H 'Authorization: ***' https://h/x"),
    ("Cookie: session=abc; csrf=def", "Cookie: ***"),
    ("the bearer token expired", "the bearer token expired"),
    ("Bearer authentication failed", "Bearer authentication failed"),
    ("Authorization: Bearer abcdefghijklmnop", "Authorization: ***"),
    ("got Bearer abcdefghijklMNOP", "got Bearer ***"),
    ("--token-limit 5 --max_tokens 100", "--token-limit 5 --max_tokens 100"),
    ("denied: requested access to the resource is denied",
     "denied: requested access to the resource is denied"),
])
def test_credentials_are_told_by_their_shape(text: str, masked: str) -> None:
    """A server echoing the request's headers (a token issued for that one request), a
    command line, a JSON config: no configured value names these credentials."""
    from promoter.core.masking import without_credentials

    assert without_credentials(text) == masked
    assert without_credentials(masked) == masked


GCS_SIGNED = ("https://storage.googleapis.com/models/fraud/model.pkl?X-Goog-Algorithm="
              "GOOG4-RSA-SHA256&X-Goog-Credential=sa%40p.iam.gserviceaccount.com%2F20240101"
              "&X-Goog-Date=20240101T000000Z&X-Goog-Expires=900&X-Goog-SignedHeaders=host"
              "&X-Goog-Signature=5a3c0ffee0ddf00d")


@pytest.mark.parametrize(("url", "secret"), [
    (GCS_SIGNED, "5a3c0ffee0ddf00d"),
    ("https://h/m?Upload-Signature=SECRETSIG&v=1", "SECRETSIG"),
    ("https://h/m?x-signature=SECRETSIG", "SECRETSIG"),
    ("https://maps.googleapis.com/x?q=1&key=AIzaSyA1234567890", "AIzaSyA1234567890"),
    ("https://fn.azurewebsites.net/api/score?code=AzFnSECRET==&name=x", "AzFnSECRET=="),
    ("https://h/model?jwt=SECRETJWT", "SECRETJWT"),
    ("https://app/cb#access_token=SECRETAT&token_type=bearer", "SECRETAT"),
    ("https://app/cb#state=s1&id_token=SECRETID", "SECRETID"),
])
def test_signed_url_and_url_only_credentials_are_masked(url: str, secret: str) -> None:
    """GCS V4 signed URLs kept their X-Goog-Signature (only X-Goog-Credential was masked),
    so a model source quoting one reached the committed annotation and the MR text; Google's
    key=, Azure Functions' code=, jwt= and a fragment's tokens passed too."""
    from promoter.core.masking import without_url_credentials

    masked = without_url_credentials(url)
    assert secret not in masked and MASK in masked
    assert secret not in masked_value("source", url)
    assert "storage.googleapis.com" in without_url_credentials(GCS_SIGNED)   # the rest stays


@pytest.mark.parametrize("text", ["exit code=1 after 3 tries", "--opts=key=value",
                                  "lookup key=fraud-detector", '{"code": 404, "key": "m"}'])
def test_key_and_code_outside_a_url_stay_readable(text: str) -> None:
    assert masked_value("args", text) == text


@pytest.mark.parametrize("name", ["wandb_key", "openai_key", "ssh_key", "signing_key",
                                  "github_pat", "gitlab_pat", "hf_auth", "WANDB_KEY",
                                  "openaiKey", "ssh-key"])
def test_vendor_keys_pats_and_auth_names_are_secret(name: str) -> None:
    assert secret_name(name)
    assert masked_value(name, "plain-looking-value") == MASK
    assert masked_value("args", f"--{name}=plainvalue --page=2") == f"--{name}=*** --page=2"


@pytest.mark.parametrize("value", [
    "glpat-AbCdEf1234567890xYz_",
    "ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
    "gho_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
    "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123",
    "sk-AbCdEfGh1234567890IjKlMnOp",
    "sk-proj-AbCdEfGh1234567890IjKlMnOpQrSt_uv-wx",
    "sk-proj-Ab-CdEfGh1234567890IjKlMnOpQrSt_uv-wx",
    "sk-ant-api03-AbCdEfGh1234567890IjKlMnOpQrSt-uvWxYz0123456789_AbCdEf-GhIjKlAA",
    "hf_AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh",
    "AKIAIOSFODNN7EXAMPLE",
    "ASIAY34FZKBOKMUTVV7A",
    "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    "xoxp-123456789012-1234567890123-1234567890123-abcdef0123456789",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
])
def test_well_known_token_shapes_are_masked_under_any_name(value: str) -> None:
    """A run parameter named harmlessly ("notes", "args") held a GitLab, GitHub, OpenAI,
    Hugging Face, AWS, Slack token or a JWT, and the MR table showed it."""
    assert masked_value("notes", value) == MASK
    assert masked_value("args", f"--x={value} --page=2") == "--x=*** --page=2"
    assert value not in masked_value("cmd", f"curl -d '{value}' https://h")


@pytest.mark.parametrize(("name", "value"), [
    ("sort_key", "timestamp"), ("label_key", "is_fraud"), ("text_key", "body"),
    ("primary_key", "id"), ("input_key", "features"), ("learning_rate", "0.001"),
    ("estimator", "sk-learn-compatible-estimator"), ("task", "task-classification-2024"),
    ("hub_model", "hf_hub_model_name_for_the_fraud_team"), ("region", "ASIA-PACIFIC"),
    ("optimizer", "adamw_torch_fused"), ("tokenizer", "meta-llama/Llama-3-8B"),
    ("auth_mode", "none"), ("pattern", "pat"), ("a_key_b", "x"), ("monkey", "banana"),
])
def test_ordinary_parameters_stay_visible(name: str, value: str) -> None:
    assert not secret_name(name)
    assert masked_value(name, value) == value


@pytest.mark.parametrize(("name", "value"), [
    ("session_key", "SessionId"), ("item_key", "ItemId"), ("time_key", "Time"),
    ("client_key", "customer_id"), ("use_auth", "True"), ("require_auth", "False"),
    ("enable_auth", "1"), ("disable_auth", "no"), ("auth_token_required", "true"),
    ("estimator", "sk-learn-gradient-boosting-v2"),
    ("estimator", "sk-learn-histgradientboostingclassifier"),
    ("model", "sk-learn-2024-gradient-boosting-classifier-v2"),
])
def test_recommender_columns_switches_and_hyphenated_names_stay_visible(
        name: str, value: str) -> None:
    """A session-based recommender's column names (session_key, item_key, time_key), an
    auth switch's True/False and a hyphenated estimator name were shown as ***."""
    assert masked_value(name, value) == value
    assert masked_value("args", f"--{name} {value}") == f"--{name} {value}"


@pytest.mark.parametrize("name", ["service_key", "basic_auth", "db_password", "hf_token"])
def test_a_secret_name_still_hides_a_number(name: str) -> None:
    """Only true/false are shown under a secret's name: a password may be all digits."""
    assert masked_value(name, "12345678") == MASK
    assert masked_value(name, "hunter2") == MASK


PEM = ("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIIx7d9fJq3k1b2VvY2xpZW50LWtleS1mb3ItdGVzdHM\n"
       "-----END EC PRIVATE KEY-----")


@pytest.mark.parametrize("name", ["client_key", "notes", "ssl_client_key", "tls_client_key"])
@pytest.mark.parametrize("pem", [PEM, PEM.replace("\n", ""), PEM.split("-----END")[0],
                                 PEM.replace("EC PRIVATE", "OPENSSH PRIVATE"),
                                 PEM.replace("EC PRIVATE", "ENCRYPTED PRIVATE")])
def test_a_pem_private_key_is_masked_under_any_name(name: str, pem: str) -> None:
    """Keeping "client_key" readable as a column name showed an mTLS client's PEM private key
    in the MR table: the key is told by its BEGIN line, through its END line (or the end of a
    cut-off text)."""
    assert masked_value(name, pem) == MASK
    shown = masked_value("args", f"--key-data {pem} --page=2")
    assert "MHcCAQEE" not in shown and "PRIVATE KEY" not in shown


@pytest.mark.parametrize("name", ["ssl_client_key", "tls_client_key", "tls_key", "SSL_KEY",
                                  "mtls-client-key"])
def test_a_tls_settings_key_is_secret_by_its_name(name: str) -> None:
    assert secret_name(name) and masked_value(name, "/etc/tls/client.key") == MASK


def test_a_public_key_or_certificate_stays_readable() -> None:
    certificate = "-----BEGIN CERTIFICATE-----MIIBszCCAVmgAwIBAgIU-----END CERTIFICATE-----"
    assert masked_value("ca_bundle", certificate) == certificate
