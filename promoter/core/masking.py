"""Rules that tell a secret by its shape alone, with no configured values to look for.

Pure, so the core's MR text applies them too (promoter.redaction, which also masks the
configured secrets, builds on them for logs and error messages).
"""

from __future__ import annotations

import itertools
import re

MASK = "***"
# user:password@ or token@ in any URL; a URL's userinfo is a credential in every scheme we meet.
# Up to the last "@" before the host's end, as urlsplit and HTTP clients split a password
# holding an unescaped "@" ("https://alice:p@ss@host": the password is "p@ss").
_URL_USERINFO = re.compile(r"://[^/\s'\"?#]*@")
# name=value pairs in a URL's query or a libpq keyword string, the name perhaps
# percent-encoded ("pass%77ord=", which libpq decodes to password=).
# A value may be quoted, as libpq keyword strings and connection strings quote one holding
# spaces (password='two words'): the whole quoted value is the credential, closing quote and
# backslash escapes included; unclosed, it runs to the end.
_QUOTED_VALUE = r"'(?:[^'\\]|\\.)*'?|\"(?:[^\"\\]|\\.)*\"?"
_QUOTED = re.compile(_QUOTED_VALUE, re.S)
_PARAM = re.compile(r"(?<![^?&\s])([^=&?\s]+)=(" + _QUOTED_VALUE + r"|[^&\s]*)", re.S)
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
# Words of a setting's name that make its value a credential, alone or as a pair. Whole
# words, so "max_tokens" or "tokenizer" (an LLM's parameters) stay readable.
_SECRET_WORDS = frozenset({"password", "passwd", "pwd", "pw", "passphrase", "secret", "token",
                           "credential", "credentials", "apikey", "authorization", "bearer"})
_SECRET_PAIRS = frozenset({("api", "key"), ("access", "key"), ("private", "key"),
                           ("secret", "key"), ("auth", "key"), ("account", "key")})
# "<vendor>_key" names a credential ("wandb_key", "openai_key", "ssh_key", "signing_key"), but
# "key" after an ordinary word is the name of a field or column in ML code ("sort_key",
# "label_key", "text_key", "primary_key", "input_key"; a session-based recommender's
# "session_key", "item_key", "time_key"; a customer table's "client_key"), so a pair with
# "key" counts only when its first word is a service or a kind of key listed here, never
# "key" after any word. "service" stays: "service_key" is PagerDuty's integration key (and
# other vendors'), and no common column is called so.
_KEY_QUALIFIERS = frozenset({
    "openai", "anthropic", "cohere", "mistral", "groq", "gemini", "google", "gcp", "aws",
    "azure", "hf", "huggingface", "wandb", "comet", "neptune", "pinecone", "weaviate",
    "qdrant", "replicate", "together", "kaggle", "github", "gitlab", "slack", "stripe",
    "datadog", "sentry", "databricks", "mlflow", "serpapi", "ssh", "signing", "encryption",
    "decryption", "license", "master", "service", "deploy"})
# "<something>_pat" (a personal access token: "github_pat", "gitlab_pat") and
# "<something>_auth" ("hf_auth", "basic_auth") hold one after a qualifier; alone, "pat" or
# "auth" may be anything, so only as the last of two or more words, and not after a word
# that makes the name a switch ("use_auth", "require_auth", "disable_auth": True or False).
_SECRET_LAST_WORDS = ("pat", "auth")
_SWITCH_WORDS = frozenset({"use", "require", "requires", "enable", "enabled", "disable",
                           "disabled", "skip", "no", "with", "without", "allow", "need",
                           "needs", "is", "has"})
# A value the name rule never hides: a switch's True or False holds no credential, whatever
# the switch is called ("auth_token_required": "true"). Numbers are still hidden: a password
# or PIN may be all digits.
_BOOLEAN = re.compile(r"(?i)(?:true|false)\Z")
# A name written as one lowercase word ("pgpassword", "dbpassword", "hftoken", Azure's
# "accountkey") ends in one. An ending, not a part: "max_tokens" and "tokenizer" end in
# none ("tokens" is a count), so they stay readable.
_SECRET_ENDINGS = ("password", "passwd", "passphrase", "secret", "token", "credential",
                   "credentials", "apikey", "accesskey", "accountkey", "privatekey",
                   "secretkey")
# Connection-string and signed-URL parameters that are credentials without saying so: a SAS
# token's "sig", S3 presigned URLs' signature and session token.
_SECRET_PARAMS = frozenset({"sig", "signature", "x-amz-signature", "x-amz-security-token"})
# Parameters that are credentials only in a URL's query (or fragment): Google's API "key=",
# an Azure Functions "code=" (also an OAuth authorization code), "jwt=". Elsewhere these
# words are ordinary ("exit code=1", {"key": "fraud-detector"}), so they count only after
# "?", "&" or "#".
_URL_SECRET_PARAMS = frozenset({"key", "code", "jwt"})
_URL_SEPARATORS = ("?", "&", "#")
# The name of a name=value pair, separated as in URL queries, libpq keyword strings and the
# "Server=…;Password=…" connection strings of ADO.NET and Azure Storage, or starting the
# value of another pair: "--url=https://h/p?sig=…" and "--dsn=postgresql://h/db?password=…"
# hold a credential inside the value of a harmless name, which must be searched too.
# After "#" too: an OAuth implicit-flow redirect carries "#access_token=…&id_token=…".
_PARAM_NAME = re.compile(r"(?<![^?&;=#\s])([^=&?;#\s]+)=")
# A credential's value ends at the next separator or at a URL's fragment, which is kept.
_VALUE_END = re.compile(r"[&;#\s]|\Z")
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+")


def without_url_userinfo(text: str) -> str:
    """``scheme://user:password@host`` → ``scheme://***@host`` wherever it appears in ``text``."""
    return _URL_USERINFO.sub(f"://{MASK}@", text)


def password_param(name: str) -> bool:
    """Whether a URL query or libpq parameter ``name`` sets a password once decoded."""
    # Percent-decoded byte by byte: only ASCII bytes can spell "password", and for those
    # this is what urllib's unquote (and libpq) make of them.
    decoded = _PERCENT.sub(lambda found: chr(int(found[1], 16)), name)
    return decoded.strip().lower() == "password"


def without_password_params(text: str) -> str:
    """Every ``password=…`` parameter in ``text`` (a URL's query, a libpq keyword string)
    masked, its name percent-encoded or not."""
    return _PARAM.sub(lambda found: f"{found[1]}={MASK}" if password_param(found[1])
                      else found[0], text)


def secret_name(name: str) -> bool:
    """Whether a setting called ``name`` (a run parameter, say) holds a credential:
    ``hf_token``, ``dbPassword``, ``OPENAI_API_KEY``, ``client-secret``, ``PGPASSWORD``."""
    words = [word.lower() for word in _WORD.findall(name)]
    return any(word in _SECRET_WORDS or word.endswith(_SECRET_ENDINGS) for word in words) or \
        any(pair in _SECRET_PAIRS or _qualified_key(pair) for pair in itertools.pairwise(words)) \
        or _secret_last_word(words) or _tls_key(words)


# A key of a TLS setting is a private key ("ssl_client_key", "tls_key", "mtls_client_key"),
# whatever word stands between: "client_key" alone may be a table's column and stays
# readable (a PEM private key under it is masked by its shape, _TOKEN_SHAPES).
_TLS_WORDS = frozenset({"ssl", "tls", "mtls", "x509"})


def _tls_key(words: list[str]) -> bool:
    return len(words) > 1 and words[-1] == "key" and not _TLS_WORDS.isdisjoint(words[:-1])


def _qualified_key(pair: tuple[str, str]) -> bool:
    """("openai", "key"), ("ssh", "key"): a key of a service or kind _KEY_QUALIFIERS lists."""
    return pair[1] == "key" and pair[0] in _KEY_QUALIFIERS


def _secret_last_word(words: list[str]) -> bool:
    """"github_pat", "hf_auth": a name of two or more words ending in "pat" or "auth", the
    one before not a switch's ("use_auth")."""
    return len(words) > 1 and words[-1] in _SECRET_LAST_WORDS and words[-2] not in _SWITCH_WORDS


def without_secret_params(text: str) -> str:
    """Every parameter in ``text`` whose name says it is a credential masked: a URL query's
    ``token=``, a libpq ``password=``, ``AccountKey=`` in an Azure connection string."""
    # A scan, not one re.sub: after a harmless name the search goes on inside its value (a
    # substitution would skip the whole match), after a credential past the masked value.
    pieces: list[str] = []
    copied = position = 0
    quotes = _QuoteParity(text)
    while (found := _PARAM_NAME.search(text, position)) is not None:
        position = found.end()
        name = _PERCENT.sub(lambda escaped: chr(int(escaped[1], 16)), found[1])
        after = text[found.start() - 1:found.start()]
        if credential_param(name) or (after in _URL_SEPARATORS
                                      and name.strip().lower() in _URL_SECRET_PARAMS):
            quoted = _QUOTED.match(text, position)
            if quoted is not None:
                pieces += [text[copied:position], MASK]
                copied = position = quoted.end()
                continue
            end = _VALUE_END.search(text, position)
            assert end is not None  # \Z always matches
            pieces += [text[copied:position], MASK]
            copied = position = _closing_quote_kept(text, position, end.start(), quotes)
    pieces.append(text[copied:])
    return "".join(pieces)


def _closing_quote_kept(text: str, value_start: int, value_end: int,
                        quotes: _QuoteParity) -> int:
    """Where an unquoted credential's mask ends: before a last character that closes a
    quote opened earlier on the line (``dsn='host=h password=pw'``), so the text around it
    stays balanced; masking it again then leaves it as it is."""
    last = text[value_end - 1:value_end]
    if value_end > value_start + 1 and last in ("'", '"') and quotes.odd(last, value_start):
        return value_end - 1
    return value_end


class _QuoteParity:
    """Whether each quote character occurs an odd number of times on the line before a
    position, counted as the scan moves on (positions only grow): recounting from the
    line's start at every credential made a long line of them quadratic."""

    def __init__(self, text: str) -> None:
        self._text, self._at = text, 0
        self._counts = {"'": 0, '"': 0}

    def odd(self, quote: str, upto: int) -> bool:
        start = self._at
        newline = self._text.rfind("\n", start, upto)
        if newline != -1:
            self._counts, start = {"'": 0, '"': 0}, newline + 1
        for mark in self._counts:
            self._counts[mark] += self._text.count(mark, start, upto)
        self._at = upto
        return self._counts[quote] % 2 == 1


def credential_param(name: str) -> bool:
    """Whether a parameter inside a value is a credential. Stricter than secret_name: the
    name must END in the credential ("access_token", "AccountKey"), since inside free text a
    flag such as "--token-limit" merely mentions one."""
    plain = name.strip().lower()
    # Any "…signature" (GCS V4's X-Goog-Signature, S3's X-Amz-Signature) signs the URL.
    if plain in _SECRET_PARAMS or plain.endswith("signature"):
        return True
    words = [word.lower() for word in _WORD.findall(name)]
    last_two = (words[-2], words[-1]) if len(words) > 1 else None
    return bool(words) and (words[-1] in _SECRET_WORDS or words[-1].endswith(_SECRET_ENDINGS)
                            or last_two in _SECRET_PAIRS
                            or (last_two is not None and _qualified_key(last_two))
                            or _secret_last_word(words))


def without_url_credentials(url: str) -> str:
    """``url`` fit to quote: its userinfo (``user:password@``, ``token@``) and every query
    parameter whose name says it is a credential (``?token=``, ``?access_token=``) masked."""
    return without_secret_params(without_url_userinfo(url))


# An HTTP Authorization value: its scheme and credentials ("Bearer eyJ…", "Basic dXNl…"), as
# a server echoing request headers, a client's debug output or autologged headers quote it.
# Either is at least 8 token68 characters holding something a word does not (a digit, one
# of "._~+/=-", a capital past the first letter), so "Bearer authentication failed" and
# "Basic Authentication" stay readable.
_BEARER = re.compile(r"(?i)\b(bearer\s+)(?-i:(?=[A-Za-z0-9._~+/=-]*[0-9._~+/=-]|"
                     r"[A-Za-z0-9._~+/=-]+[A-Z]))[A-Za-z0-9._~+/=-]{8,}")
_BASIC = re.compile(r"(?i)\b(basic\s+)(?-i:(?=[A-Za-z0-9+/]*[0-9+/=]|[A-Za-z0-9+/]+[A-Z]))"
                    r"[A-Za-z0-9+/]{8,}=*")
# Headers that carry a credential whatever it looks like, "Name: value" or as a JSON/dict key.
_CREDENTIAL_HEADERS = ("authorization|proxy-authorization|private-token|job-token|x-api-key|"
                       "api-key|x-gitlab-token|x-promoter-token|x-auth-token")
# An unquoted value ends at a quote too: the text around it may be quoted ("-H 'Authorization:
# Bearer x' https://h"), and its closing quote is not the credential's.
_HEADER = re.compile(r"(?i)(?<![\w-])([\"']?)(" + _CREDENTIAL_HEADERS + r")\1(\s*:\s*)("
                     + _QUOTED_VALUE + r"|[^\r\n,;}\"']+)")
# A cookie header holds several name=value pairs separated by ";": all of it, to the line's end.
_COOKIE = re.compile(r"(?i)(?<![\w-])([\"']?)((?:set-)?cookie)\1(\s*:\s*)(" + _QUOTED_VALUE
                     + r"|[^\r\n\"']+)")
# A quoted key (JSON, a Python dict's repr) whose name says its value is a credential:
# {"api_key": "…"}, {'db_password': '…'}.
_QUOTED_KEY = re.compile(r"([\"'])([^\"'\r\n]{1,64})\1(\s*:\s*)(" + _QUOTED_VALUE
                         + r"|[^\s,}\]]+)")
# A command-line flag naming a credential, its value the next word: "--password hunter2".
_FLAG = re.compile(r"(?<!\S)(--?([A-Za-z][\w-]*))(\s+)(?!-)(\S+)")
# An OpenAI or Anthropic key's body is random base64url, so somewhere in it (after segments
# such as Anthropic's "api03-") stands a run of 20 or more letters, digits and "_" without a
# hyphen, holding a digit; a hyphenated name ("sk-learn-gradient-boosting-v2") has none.
# A lookahead only: the match itself then takes the whole key, hyphens included.
_RANDOM_RUN_AHEAD = r"(?=(?:[A-Za-z0-9_]*-)*(?=[A-Za-z0-9_]{20})[A-Za-z_]*[0-9])"
# Tokens whose vendors give them a fixed prefix, so they are credentials wherever they stand
# (a run parameter's value under any name, a server's error body). Each needs a random-
# looking body long enough (and a digit or a capital where the vendor's alphabet has them)
# that a word or a hyphenated name ("sk-learn-compatible") is never taken for one.
_TOKEN_SHAPES = re.compile(
    r"(?<![A-Za-z0-9_-])(?:"
    r"glpat-[A-Za-z0-9_.-]{20,}"                              # GitLab personal access token
    r"|gh[pousr]_[A-Za-z0-9]{30,}"                            # GitHub classic / OAuth / app
    r"|github_pat_[A-Za-z0-9_]{30,}"                          # GitHub fine-grained
    r"|sk-(?:proj-|ant-)?" + _RANDOM_RUN_AHEAD + r"[A-Za-z0-9_-]{20,}"     # OpenAI, Anthropic
    r"|hf_(?=[a-z0-9]*[A-Z])(?=[A-Z0-9]*[a-z])[A-Za-z0-9]{30,}"   # Hugging Face
    r"|(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])"              # AWS access key id
    r"|xox[abposr]-(?=[A-Za-z-]*[0-9])[A-Za-z0-9-]{10,}"      # Slack
    r"|eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"  # a JWT (header.payload.sig)
    # A PEM private key (PKCS#1/#8, EC, OpenSSH, encrypted), through its END line, or to the
    # end of the text when that was cut off: under any name, "client_key" too.
    r"|-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"
    r"(?:[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|[\s\S]*)"
    r")")


def without_credential_shapes(text: str) -> str:
    """Credentials ``text`` holds in shapes other than name=value: Authorization values
    (Bearer, Basic), credential headers and quoted keys whose name says so, the value
    after a credential flag (``--password X``), and tokens told by their vendor's prefix
    (``glpat-…``, ``ghp_…``, ``sk-…``, ``hf_…``, ``AKIA…``, ``xoxb-…``, a JWT). Applied
    wherever text quotes what another system sent or recorded (a server's error body, run
    parameters), since its tokens change per request and no configured value could catch
    them."""
    for header in (_HEADER, _COOKIE):
        text = header.sub(lambda found: f"{found[1]}{found[2]}{found[1]}{found[3]}"
                          f"{_masked_like(found[4])}", text)
    text = _TOKEN_SHAPES.sub(MASK, text)
    text = _BEARER.sub(lambda found: f"{found[1]}{MASK}", text)
    text = _BASIC.sub(lambda found: f"{found[1]}{MASK}", text)
    # credential_param, not secret_name: a key must END in the credential ("api_key", not
    # "token_limit"), as inside any other free text.
    text = _QUOTED_KEY.sub(lambda found: f"{found[1]}{found[2]}{found[1]}{found[3]}"
                           f"{_masked_like(found[4])}" if credential_param(found[2])
                           else found[0], text)
    return _FLAG.sub(lambda found: f"{found[1]}{found[3]}{MASK}"
                     if credential_param(found[2]) else found[0], text)


def _masked_like(value: str) -> str:
    """The mask, quoted as the value it replaces was, so JSON or a dict's repr stays whole."""
    quote = value[:1]
    return f"{quote}{MASK}{quote}" if quote in ("'", '"') else MASK


def without_credentials(text: str) -> str:
    """``text`` fit to quote: every rule here that needs no configured value (URL userinfo,
    credential parameters, and the shapes of without_credential_shapes)."""
    return without_url_credentials(without_credential_shapes(text))


def masked_value(name: str, value: str) -> str:
    """``value`` of a setting called ``name`` fit for text everyone may read: all of it when
    the name says it is a credential (unless it is true or false), else every credential it
    holds in a shape we know."""
    if secret_name(name) and not _BOOLEAN.match(value.strip()):
        return MASK
    return without_credentials(value)
