"""The injection guard's scanner: text in, the rules it trips out. No I/O, no state.

Text is normalised first (invisible and bidi characters removed, NFKC, look-alike letters
folded to Latin), then matched against rule families; base64, hex and ROT13 variants are
decoded within a length bound and scanned too. Every pattern is linear-time by
construction: no quantified group holds another quantifier over an overlapping class,
repetitions that could meet a long run are bounded, and "A, then B within N characters"
is a `Near` (match positions paired), never a regex window rescanned from every A.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import codecs
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from orchestrator.vocab import InjectionScan

CRITICAL = "critical"
WARNING = "warning"

# Scan contexts a profile may choose (`injection_scan`): every rule; every rule but the
# command rules a real shell script trips; nothing.
CONTEXTS = tuple(InjectionScan)
DEFAULT_CONTEXT = InjectionScan.PROMPT

# Encoded variants: at most this many blobs per text, each decoded up to this many
# characters, and ROT13 applied to at most the first ROT13_CHARS of the text.
MAX_BLOBS = 16
MAX_DECODED_CHARS = 4096
ROT13_CHARS = 65536


@dataclass(frozen=True)
class Near:
    """`first`, then `then` starting within `window` characters of its end, with none of
    `stop` in between. Checked by pairing the two patterns' match positions, so the cost
    stays linear however many times `first` repeats (a regex window would rescan)."""

    first: re.Pattern[str]
    then: re.Pattern[str]
    window: int
    stop: str = "\n"

    def search(self, text: str) -> bool:
        starts = [m.start() for m in self.then.finditer(text)]
        if not starts:
            return False
        stops = [m.start() for m in re.finditer(f"[{re.escape(self.stop)}]", text)]
        for m in self.first.finditer(text):
            end = m.end()
            i = bisect.bisect_left(starts, end)
            if i == len(starts) or starts[i] - end > self.window:
                continue
            j = bisect.bisect_left(stops, end)
            if j == len(stops) or stops[j] >= starts[i]:
                return True
        return False


def near(first: str, then: str, window: int, stop: str = "\n") -> Near:
    return Near(re.compile(first), re.compile(then), window, stop)


@dataclass(frozen=True)
class Rule:
    name: str
    family: str
    severity: str
    description: str
    patterns: tuple[re.Pattern[str] | Near, ...]
    # Substrings one of which every match contains: a rule none of them is in is skipped,
    # which `in` decides far faster than a pattern that starts with `\b` and alternatives.
    needles: tuple[str, ...]
    # False for command rules that ordinary shell scripts trip (pipes, `;`, `$( )`, rm).
    in_shell: bool = True


@dataclass(frozen=True)
class Finding:
    rule: str
    description: str
    severity: str

    def as_json(self) -> dict[str, str]:
        return {"rule": self.rule, "description": self.description, "severity": self.severity}


def _rule(name: str, needles: tuple[str, ...], family: str, severity: str, description: str,
          *patterns: str | Near, in_shell: bool = True) -> Rule:
    # Patterns are lower case and matched against lower-cased text: IGNORECASE is slower.
    compiled = tuple(p if isinstance(p, Near) else re.compile(p) for p in patterns)
    return Rule(name, family, severity, description, compiled, needles, in_shell)


_QUALIFIER = r"(?:previous|prior|earlier|above|preceding|former|original|initial|system)"
_NOUN = r"(?:instructions?|prompts?|rules|directives|guidelines|messages|context)"
_DANGEROUS = (r"(?:sudo\s+)?(?:rm\s+-[a-z]*[rf]|mkfs|dd\s+if=|shutdown\b|reboot\b|halt\b"
              r"|chmod\s+(?:-r\s+)?0?777|chown\s+-r|curl\b|wget\b|nc\b|ncat\b|netcat\b"
              r"|(?:ba|z|k|da)?sh\b|python[0-9.]*\s+-c|perl\s+-e|eval\b|kill\s+-9|:\(\))")
_METADATA = (r"(?:169\.254\.169\.254|169\.254\.170\.2\b|metadata\.google\.internal"
             r"|metadata\.azure\.com|100\.100\.100\.200|fd00:ec2::254|\b2852039166\b"
             r"|0xa9fea9fe)")
_SECRETS = (r"(?:credentials|secrets?|api[\s_-]?keys?|access[\s_-]?tokens?|tokens|passwords?"
            r"|private[\s_-]?keys?|environment\s+variables|env\s+vars|system\s+prompt)")

PROMPT_RULES = (
    _rule("instruction-override", ('ignore', 'disregard', 'forget', 'overrid', 'overrul', 'bypass', 'instructions'), "instruction override", CRITICAL,
          "Tells the agent to ignore or replace the instructions it was given",
          rf"\b(?:ignore|disregard|forget|override|overrule|bypass)\s+(?:all\s+|any\s+|the\s+"
          rf"|your\s+|of\s+the\s+|every\s+)?(?:of\s+(?:the|your)\s+)?{_QUALIFIER}\s+{_NOUN}",
          r"\b(?:ignore|disregard|forget)\s+(?:everything|all)\s+(?:above|before|previously"
          r"|you\s+(?:were|have\s+been)\s+told)",
          r"\b(?:new|updated|real|actual)\s+(?:system\s+)?instructions\s*:\s*(?:you|ignore)"),
    _rule("new-identity", ('you', 'pretend', 'mode'), "new identity", CRITICAL,
          "Tries to give the agent a new identity or persona",
          r"\byou\s+are\s+(?:now|no\s+longer)\s+(?:an?\s+|the\s+|my\s+)?(?:new\s+|different\s+)?"
          r"(?:unrestricted|unfiltered|uncensored|jailbroken|evil|rogue|ai|assistant|model"
          r"|chatbot|persona|character|bound|restricted|limited)\b",
          r"\bfrom\s+now\s+on,?\s+you\s+(?:are|will\s+(?:be|act|respond)|must\s+act)\b",
          r"\bpretend\s+(?:to\s+be|that\s+you\s+are|you\s+are)\s+(?:an?\s+)?(?:unrestricted"
          r"|unfiltered|different|another|evil|ai|assistant|model|dan)\b",
          r"\byour\s+new\s+(?:role|identity|persona|name|instructions)\s+(?:is|are)\b",
          r"\b(?:dan|developer|god|jailbreak)\s+mode\b"),
    _rule("safety-bypass", ('safety', 'content', 'ethical', 'moral', 'jailbreak'), "safety bypass", CRITICAL,
          "Asks the agent to switch off its safety rules or filters",
          r"\b(?:bypass|disable|ignore|turn\s+off|remove|circumvent|evade)\s+(?:all\s+|any\s+"
          r"|your\s+|the\s+|its\s+)?(?:safety|content|ethical|moral)\s+(?:filters?|guidelines"
          r"|restrictions|rules|checks|policies|guardrails|measures|protocols)",
          r"\bjailbreak(?:ing|ed)?\b",
          r"\b(?:without|no)\s+(?:any\s+)?(?:ethical|moral|safety|content)\s+(?:restrictions"
          r"|limitations|filters|guidelines|constraints)"),
    _rule("hidden-instructions", ('<!--', '<|', '[inst', '[/inst', '[sys', '[/sys', '<<sys', '<</sys', 'system', 'assistant'), "hidden instructions", CRITICAL,
          "Carries instructions hidden in markup or in a fake chat role",
          near(r"<!--", r"\b(?:ignore|instructions?|system\s+prompt|you\s+must|assistant)\b",
               300, stop=">"),
          r"<\|(?:im_start|im_end|system|endoftext|start_header_id)\|>",
          r"\[/?(?:inst|sys)\]|<</?sys>>",
          r"(?:^|\n)[ \t]*(?:\[|<)?(?:system|assistant)(?:\]|>)?[ \t]*:[ \t]*(?:you\s+(?:are|must"
          r"|will)|ignore|from\s+now)"),
    _rule("data-exfiltration", ('credential', 'secret', 'key', 'token', 'password', 'environment', 'env', 'system', 'prompt', 'instructions', 'message', '|', 'curl', 'wget'), "data exfiltration", CRITICAL,
          "Asks for secrets, credentials or the system prompt to be revealed or sent away",
          rf"\b(?:send|post|upload|email|leak|exfiltrate|forward|transmit)\s+(?:all\s+|any\s+"
          rf"|the\s+|your\s+|my\s+|these\s+)?(?:of\s+(?:the|your)\s+)?{_SECRETS}\s+to\b",
          r"\b(?:output|print|reveal|show|repeat|display|dump|tell\s+me|give\s+me|leak|write"
          r"\s+out)\s+(?:me\s+)?(?:all\s+|the\s+|your\s+)?(?:full\s+|exact\s+|hidden\s+"
          r"|original\s+|initial\s+)?(?:system|hidden|initial|original)\s+(?:prompt|instructions"
          r"|message)",
          r"\b(?:env|printenv|set)\b[ \t]*\|[ \t]*(?:curl|wget|nc|ncat)\b",
          near(r"\b(?:curl|wget)\b", r"(?:\.env\b|/etc/passwd|/etc/shadow|\bid_rsa|\bid_ed25519"
               r"|\.aws/credentials|\$\((?:env|printenv)\))", 200)),
)

COMMAND_RULES = (
    _rule("shell-injection", (';', '&', '|', '`', '$('), "shell metacharacters", CRITICAL,
          "Shell metacharacters followed by a dangerous command",
          rf"(?:[;&|`]|\$\()[ \t]*{_DANGEROUS}",
          in_shell=False),
    _rule("destructive-command", ('rm', 'mkfs', 'dd', ':('), "shell metacharacters", CRITICAL,
          "Wipes a filesystem, a disk or the machine",
          # rm with flags that include r and f (-rf, -fr, -r -f, -Rvf), then / ~ $HOME or *
          r"\brm(?=(?:\s+-[a-z]{1,12}){0,3}\s+-[a-z]{0,11}r)(?=(?:\s+-[a-z]{1,12}){0,3}\s+-[a-z]{0,11}f)"
          r"(?:\s+-[a-z]{1,12}){1,4}\s+(?:--no-preserve-root\s+)?(?:/|/\*|~/?|\$home/?|\*)"
          r"(?=[\s;|&)`'\"]|$)",
          r"\bmkfs(?:\.[a-z0-9]+)?\s+/dev/",
          near(r"\bdd\s", r"\bof=/dev/(?:sd|nvme|hd|xvd|vd|disk)", 100),
          r":\(\)\s*\{\s*:\s*\|\s*:\s*&\s*\}\s*;\s*:"),
    _rule("path-traversal", ('..', '/etc/', '/proc/self', '/.ssh/'), "path traversal", CRITICAL,
          "Climbs out of the working directory towards system or secret files",
          r"(?:\.\.[/\\]){2,16}(?:etc|root|home|proc|var|usr|windows|boot|\.ssh)\b",
          r"(?:^|[\s'\"=(])(?:/etc/(?:passwd|shadow|sudoers)|/proc/self/environ"
          r"|~/\.ssh/|/root/\.ssh/)",
          in_shell=False),
    _rule("download-and-run", ('curl', 'wget', 'fetch', 'iex', 'invoke-expression'), "download and run", CRITICAL,
          "Downloads code and runs it at once",
          near(r"\b(?:curl|wget|fetch)\b", r"\|[ \t]*(?:sudo\s+)?(?:(?:ba|z|k|da)?sh|python[0-9.]*"
               r"|perl|ruby|node)\b", 300, stop="\n;"),
          r"\b(?:ba|z)?sh\s+(?:-c\s+)?[\"']?(?:\$\(|<\(|`)[ \t]*(?:curl|wget)\b",
          near(r"\b(?:curl|wget)\b", r"(?:\s-o|>)[ \t]*[^\s;&]{1,200}[ \t]*(?:&&|;)[ \t]*"
               r"(?:chmod\s+\+x|\./|(?:ba)?sh\s)", 300),
          near(r"\b(?:iex|invoke-expression)\b", r"(?:downloadstring|invoke-webrequest|\biwr\b)",
               100)),
    _rule("reverse-shell", ('/dev/tcp', '/dev/udp', 'nc', 'netcat', 'socat', 'mkfifo', 'socket', 'sh'), "reverse shell", CRITICAL,
          "Opens a shell to a remote machine",
          r"/dev/(?:tcp|udp)/",
          near(r"\bn(?:c|cat|etcat)\b", r"\s-[a-z]{0,8}[ec][ \t]+/bin/(?:ba|z|da)?sh\b", 100),
          near(r"\bsocat\b", r"\bexec:", 200),
          near(r"\bmkfifo\b", r"\bn(?:c|cat|etcat)\b", 200),
          near(r"\bsocket\b", r"\b(?:dup2|pty\.spawn)\b", 300),
          r"\b(?:ba|z)?sh\s+-i\s+(?:>&|&>|<&)"),
    _rule("ssrf-metadata", ('169.254', 'metadata', '100.100.100.200', 'fd00:ec2', '2852039166', '0xa9fea9fe'), "SSRF", CRITICAL,
          "Reaches a cloud metadata service, where instance credentials live",
          _METADATA),
)

RULES: tuple[Rule, ...] = PROMPT_RULES + COMMAND_RULES
_BY_NAME = {r.name: r for r in RULES}

# Rules whose name a finding from a decoded variant carries, with its family's name.
ENCODED = {
    "base64": ("encoded-base64", "Base64-encoded text that decodes to: "),
    "hex": ("encoded-hex", "Hex-encoded text that decodes to: "),
    "rot13": ("encoded-rot13", "ROT13-shifted text that reads: "),
}
HIDDEN_CHARACTERS = Finding(
    "hidden-characters", "Invisible or text-direction characters mixed into the text",
    WARNING)

# Zero-width, joiners, word joiners, soft hyphen, BOM, and the bidi controls.
_INVISIBLE = re.compile("[\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")
# Cyrillic and Greek letters drawn like Latin ones (NFKC leaves them alone).
_HOMOGLYPHS = str.maketrans(
    "аеорсухіјѕԁԛԝүһӏАВЕКМНОРСТХІЈЅΑΒΕΖΗΙΚΜΝΟΡΤΥΧαεικνορτυχ",
    "aeopcyxijsdqwyhlABEKMHOPCTXIJSABEZHIKMNOPTYXaeiknoptux",
)
_BASE64 = re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{24,}={0,2}")
# The look-behind makes only a run's first character a start: scanning from each one of
# its characters would be quadratic in the run's length.
_HEX = re.compile(r"(?<![0-9A-Za-z])[0-9a-fA-F]{24,}(?![0-9A-Za-z])")
_HEX_ESCAPED = re.compile(r"(?:\\x[0-9a-fA-F]{2}){8,}")


def normalise(text: str) -> tuple[str, bool]:
    """The text as it reads (see the module's docstring), and whether it hid characters."""
    cleaned = _INVISIBLE.sub("", text)
    folded = unicodedata.normalize("NFKC", cleaned).translate(_HOMOGLYPHS)
    return folded, len(cleaned) != len(text)


def _match(text: str, rules: tuple[Rule, ...]) -> list[Rule]:
    """The rules `text` (lower-cased) trips."""
    return [r for r in rules if any(n in text for n in r.needles)
            and any(p.search(text) for p in r.patterns)]


def _decoded_variants(text: str) -> Iterable[tuple[str, str]]:
    """(kind, decoded text) for each encoded blob, within the bounds above."""
    blobs = 0
    for match in _BASE64.finditer(text):
        if blobs >= MAX_BLOBS:
            break
        blob = match.group()[: MAX_DECODED_CHARS * 4 // 3]
        blob = blob[: len(blob) - len(blob) % 4]
        try:
            raw = base64.b64decode(blob.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            continue
        decoded = raw.decode("utf-8", "ignore")
        if decoded and sum(c.isprintable() or c.isspace() for c in decoded) > 0.9 * len(decoded):
            blobs += 1
            yield "base64", decoded
    for match in _HEX.finditer(text):
        if blobs >= MAX_BLOBS:
            break
        blob = match.group()[: MAX_DECODED_CHARS * 2]
        blobs += 1
        yield "hex", bytes.fromhex(blob[: len(blob) - len(blob) % 2]).decode("utf-8", "ignore")
    for match in _HEX_ESCAPED.finditer(text):
        if blobs >= MAX_BLOBS:
            break
        digits = match.group().replace("\\x", "")[: MAX_DECODED_CHARS * 2]
        blobs += 1
        yield "hex", bytes.fromhex(digits).decode("utf-8", "ignore")
    yield "rot13", codecs.decode(text[:ROT13_CHARS], "rot13")


def rules_for(context: str) -> tuple[Rule, ...]:
    if context == InjectionScan.OFF:
        return ()
    if context == InjectionScan.SHELL:
        return tuple(r for r in RULES if r.in_shell)
    return RULES


def scan(text: str, context: str = DEFAULT_CONTEXT) -> list[Finding]:
    """What `text` trips in `context`, each rule once, in the order of RULES."""
    rules = rules_for(context)
    if not rules or not text:
        return []
    normal, hid = normalise(text)
    found = _match(normal.lower(), rules)
    findings = [Finding(r.name, r.description, r.severity) for r in found]
    seen = {r.name for r in found}
    for kind, decoded in _decoded_variants(normal):
        # Only what the plain text did not already show: a rule is reported once.
        inner = _match(normalise(decoded)[0].lower(),
                       tuple(r for r in rules if r.name not in seen))
        if inner:
            name, prefix = ENCODED[kind]
            if name not in {f.rule for f in findings}:
                findings.append(Finding(name, prefix + inner[0].description.lower(), CRITICAL))
            seen.update(r.name for r in inner)
    if hid:
        findings.append(HIDDEN_CHARACTERS)
    return findings


def critical(findings: Iterable[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == CRITICAL]


def applies_in(rule: str, context: str) -> bool:
    """Whether a finding of `rule`, recorded with every rule on, counts in `context`.
    A decoded variant counts wherever the prompt rules do: only those decode."""
    if context == InjectionScan.OFF:
        return False
    known = _BY_NAME.get(rule)
    return context != InjectionScan.SHELL or known is None or known.in_shell
