//! Directory sign-in against a real OpenLDAP server (`slapd` from Debian's packages,
//! started here on 127.0.0.1 with a small directory: a developer, an admin, a disabled
//! user and one in no mapped group).
//!
//! - The console signs directory users in with their password (wrong, empty and
//!   filter-injecting names refused; the disabled and group-less users refused).
//! - A developer creates a personal token with their groups' role and scope; it works
//!   on the API; the admin pages stay closed to them.
//! - A directory admin gets the admin console.
//! - Disabling the developer in the directory revokes their token and ends their session
//!   within the check interval.
//! - The directory is reached over LDAPS with a private CA (`ca_file`), and over plain
//!   LDAP upgraded with StartTLS; a directory whose certificate the CA did not sign is
//!   refused.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::{launch, temp_home};

const SUFFIX: &str = "dc=example,dc=org";
const ROOT_DN: &str = "cn=admin,dc=example,dc=org";
const ROOT_PW: &str = "admin-secret";

/// A throwaway slapd (killed when dropped): plain LDAP (with StartTLS) on `port`,
/// LDAPS on `tls_port`, its certificate signed by the CA in `ca`.
struct Slapd {
    child: Child,
    port: u16,
    tls_port: u16,
    ca: PathBuf,
    _dir: tempfile::TempDir,
}

/// Makes a CA and a certificate for 127.0.0.1 signed by it with `openssl`; gives the
/// paths of the CA, the certificate and its key.
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=Souffleur test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

impl Drop for Slapd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin"] {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} missing: install Debian's slapd and ldap-utils (scripts/test.sh does)");
}

fn hash(password: &str) -> String {
    let out = Command::new(tool("slappasswd"))
        .args(["-s", password])
        .output()
        .expect("slappasswd");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn person(uid: &str, password: &str, extra: &str) -> String {
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!("{extra}\n")
    };
    format!(
        "dn: uid={uid},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\nuserPassword: {}\n{extra}\n",
        hash(password)
    )
}

fn group(cn: &str, members: &[&str]) -> String {
    let members: String = members
        .iter()
        .map(|m| format!("member: uid={m},ou=people,{SUFFIX}\n"))
        .collect();
    format!("dn: cn={cn},ou=groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: {cn}\n{members}\n")
}

impl Slapd {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let db = dir.path().join("db");
        std::fs::create_dir_all(&db).expect("db dir");
        let conf = dir.path().join("slapd.conf");
        let (ca, cert, key) = certificates(dir.path());
        std::fs::write(
            &conf,
            format!(
                "include /etc/ldap/schema/core.schema\ninclude /etc/ldap/schema/cosine.schema\n\
include /etc/ldap/schema/inetorgperson.schema\ninclude /etc/ldap/schema/nis.schema\n\
modulepath /usr/lib/ldap\nmoduleload back_mdb\npidfile {}/slapd.pid\n\
TLSCACertificateFile {}\nTLSCertificateFile {}\nTLSCertificateKeyFile {}\n\
database mdb\nmaxsize 16777216\nsuffix \"{SUFFIX}\"\nrootdn \"{ROOT_DN}\"\nrootpw {ROOT_PW}\ndirectory {}\n",
                dir.path().display(),
                ca.display(),
                cert.display(),
                key.display(),
                db.display()
            ),
        )
        .expect("conf");
        let ldif = format!(
            "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n\
dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n\n\
dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups\n\n{}{}{}{}{}{}{}",
            person("alice", "alice-pw", ""),
            person("bob", "bob-pw", ""),
            person("carol", "carol-pw", "employeeType: disabled"),
            person("dave", "dave-pw", ""),
            group("developers", &["alice", "carol"]),
            group("souffleur-admins", &["bob"]),
            group("contractors", &["dave"]),
        );
        let data = dir.path().join("data.ldif");
        std::fs::write(&data, ldif).expect("ldif");
        let added = Command::new(tool("slapadd"))
            .arg("-f")
            .arg(&conf)
            .arg("-l")
            .arg(&data)
            .output()
            .expect("slapadd");
        assert!(
            added.status.success(),
            "slapadd: {}",
            String::from_utf8_lossy(&added.stderr)
        );
        let (port, tls_port) = (free_port(), free_port());
        let child = Command::new(tool("slapd"))
            .arg("-f")
            .arg(&conf)
            .args([
                "-h",
                &format!("ldap://127.0.0.1:{port}/ ldaps://127.0.0.1:{tls_port}/"),
                "-d",
                "0",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("slapd");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
            || std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_err()
        {
            assert!(Instant::now() < deadline, "slapd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Slapd {
            child,
            port,
            tls_port,
            ca,
            _dir: dir,
        }
    }

    /// Applies an LDIF change as the directory's admin.
    fn modify(&self, change: &str) {
        let mut child = Command::new(tool("ldapmodify"))
            .args(["-x", "-H", &format!("ldap://127.0.0.1:{}", self.port)])
            .args(["-D", ROOT_DN, "-w", ROOT_PW])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("ldapmodify");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(change.as_bytes())
            .expect("write");
        assert!(child.wait().expect("wait").success(), "ldapmodify failed");
    }
}

/// A form post with an optional cookie: (status, location, set-cookie, body).
fn post(url: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> (u16, String, String, String) {
    send("POST", url, cookie, Some(form))
}

fn send(
    method: &str,
    url: &str,
    cookie: Option<&str>,
    form: Option<&[(&str, &str)]>,
) -> (u16, String, String, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let mut req = ureq::http::Request::builder().method(method).uri(url);
    if let Some(c) = cookie {
        req = req.header("Cookie", c);
    }
    let mut resp = match form {
        Some(fields) => {
            let body: Vec<String> = fields
                .iter()
                .map(|(k, v)| {
                    let v: String = v
                        .bytes()
                        .map(|b| match b {
                            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                                (b as char).to_string()
                            }
                            _ => format!("%{b:02X}"),
                        })
                        .collect();
                    format!("{k}={v}")
                })
                .collect();
            agent.run(
                req.header("Content-Type", "application/x-www-form-urlencoded")
                    .body(body.join("&"))
                    .expect("request"),
            )
        }
        None => agent.run(req.body(()).expect("request")),
    }
    .expect("response");
    let header = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (location, cookie) = (header("location"), header("set-cookie"));
    let status = resp.status().as_u16();
    (
        status,
        location,
        cookie.split(';').next().unwrap_or("").to_string(),
        resp.body_mut().read_to_string().unwrap_or_default(),
    )
}

fn csrf_of(body: &str) -> String {
    let at = body.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    body[at..at + 64].to_string()
}

#[test]
fn directory_users_sign_in_get_personal_tokens_and_lose_them_when_disabled() {
    let ldap = Slapd::start();
    let (dir, home) = temp_home();
    let password_file = dir.path().join("ldap-password");
    std::fs::write(&password_file, format!("{ROOT_PW}\n")).expect("password file");
    std::fs::write(
        home.join("config.toml"),
        format!(
            "[console]\nsign_in_attempts_per_minute = 30\n\n[auth.ldap]\nurl = \"ldaps://127.0.0.1:{}\"\nca_file = \"{}\"\nbind_dn = \"{ROOT_DN}\"\nbind_password_file = \"{}\"\n\
user_base = \"ou=people,{SUFFIX}\"\n\
user_filter = \"(&(objectClass=inetOrgPerson)(uid={{username}})(!(employeeType=disabled)))\"\n\
group_base = \"ou=groups,{SUFFIX}\"\ncheck_interval_secs = 1\n\n\
[[auth.ldap.groups]]\ngroup = \"cn=developers,ou=groups,{SUFFIX}\"\nrole = \"user\"\nrepos = \"web,api\"\n\n\
[[auth.ldap.groups]]\ngroup = \"cn=souffleur-admins,ou=groups,{SUFFIX}\"\nrole = \"admin\"\n",
            ldap.tls_port,
            ldap.ca.display(),
            password_file.display()
        ),
    )
    .expect("config");
    let server = launch(&home, &[]);
    let url = |p: &str| format!("{}{p}", server.url);
    let sign_in = |user: &str, password: &str| {
        post(
            &url("/admin/login"),
            None,
            &[("username", user), ("password", password)],
        )
    };

    // Refusals.
    let page = send("GET", &url("/admin/login"), None, None);
    assert!(
        page.3.contains("id=\"directory-sign-in\""),
        "the form offers directory sign-in"
    );
    for (user, password, status) in [
        ("alice", "wrong", 401),
        ("alice", "", 401),
        ("*", "alice-pw", 401),
        ("alice)(uid=*", "alice-pw", 401),
        ("carol", "carol-pw", 401),
        ("dave", "dave-pw", 403),
        ("nobody", "x", 401),
    ] {
        let (s, _, cookie, body) = sign_in(user, password);
        assert_eq!(s, status, "{user}: {body}");
        assert!(cookie.is_empty(), "{user} got a session");
    }

    // A developer: their own tokens, with their groups' role and scope.
    let (s, location, alice, _) = sign_in("alice", "alice-pw");
    assert_eq!((s, location.as_str()), (303, "/admin/me"));
    let (s, _, _, body) = send("GET", &url("/admin/me"), Some(&alice), None);
    assert_eq!(s, 200);
    assert!(body.contains("user; repositories web,api"), "{body}");
    let csrf = csrf_of(&body);
    let (s, _, _, body) = post(
        &url("/admin/me"),
        Some(&alice),
        &[("csrf", &csrf), ("label", "laptop")],
    );
    assert_eq!(s, 200, "{body}");
    let at = body
        .find("id=\"new-secret\" readonly value=\"")
        .expect("secret")
        + 32;
    let secret: String = body[at..].chars().take_while(|c| *c != '"').collect();
    let api = |token: &str| e2e::request("GET", &url("/v1/models"), Some(token), None).status;
    assert_eq!(api(&secret), 200);
    for admin_page in [
        "/admin",
        "/admin/tokens",
        "/admin/audit",
        "/admin/usage",
        "/admin/repos",
    ] {
        let (s, location, _, _) = send("GET", &url(admin_page), Some(&alice), None);
        assert!(
            s == 403 || (admin_page == "/admin" && location == "/admin/me"),
            "{admin_page}: {s}"
        );
    }

    // A directory admin: the admin console.
    let (s, location, bob, _) = sign_in("bob", "bob-pw");
    assert_eq!((s, location.as_str()), (303, "/admin"));
    let (s, _, _, body) = send("GET", &url("/admin/tokens"), Some(&bob), None);
    assert_eq!(s, 200);
    assert!(
        body.contains("alice-laptop"),
        "the admin sees personal tokens"
    );

    // Disabled in the directory: the token stops working, the session ends.
    ldap.modify(&format!(
        "dn: uid=alice,ou=people,{SUFFIX}\nchangetype: modify\nadd: employeeType\nemployeeType: disabled\n"
    ));
    let deadline = Instant::now() + Duration::from_secs(15);
    while api(&secret) != 401 {
        assert!(Instant::now() < deadline, "alice's token still works");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (s, location, _, _) = send("GET", &url("/admin/me"), Some(&alice), None);
    assert_eq!((s, location.as_str()), (303, "/admin/login"));
    let (s, _, _, body) = send("GET", &url("/admin/audit?user=directory"), Some(&bob), None);
    assert_eq!(s, 200);
    assert!(
        body.contains("alice is no longer enabled in the directory"),
        "{body}"
    );
}

#[test]
fn starttls_is_used_and_an_unknown_certificate_is_refused() {
    let ldap = Slapd::start();
    let (dir, home) = temp_home();
    let password_file = dir.path().join("ldap-password");
    std::fs::write(&password_file, ROOT_PW).expect("password file");
    let other_ca = certificates(dir.path()).0;
    let config = |ca: &Path| {
        format!(
            "[auth.ldap]\nurl = \"ldap://127.0.0.1:{}\"\nstarttls = true\nca_file = \"{}\"\nbind_dn = \"{ROOT_DN}\"\n\
bind_password_file = \"{}\"\nuser_base = \"ou=people,{SUFFIX}\"\nuser_filter = \"(uid={{username}})\"\n\
group_base = \"ou=groups,{SUFFIX}\"\n\n[[auth.ldap.groups]]\ngroup = \"cn=souffleur-admins,ou=groups,{SUFFIX}\"\nrole = \"admin\"\n",
            ldap.port,
            ca.display(),
            password_file.display()
        )
    };
    std::fs::write(home.join("config.toml"), config(&ldap.ca)).expect("config");
    let server = launch(&home, &[]);
    let sign_in = |server: &e2e::Launched| {
        post(
            &format!("{}/admin/login", server.url),
            None,
            &[("username", "bob"), ("password", "bob-pw")],
        )
    };
    let (s, location, cookie, _) = sign_in(&server);
    assert_eq!((s, location.as_str()), (303, "/admin"));
    assert!(!cookie.is_empty());
    drop(server);

    // A CA that did not sign the directory's certificate: no sign-in, a clear error.
    std::fs::write(home.join("config.toml"), config(&other_ca)).expect("config");
    let server = launch(&home, &[]);
    let (s, _, cookie, body) = sign_in(&server);
    assert_eq!(s, 503, "{body}");
    assert!(body.contains("directory is unavailable"), "{body}");
    assert!(cookie.is_empty());
}
