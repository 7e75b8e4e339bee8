//! The owner derived from the git remote's URL when `stackctl.yaml` names none, and the legacy
//! owners of older releases.

use super::*;

/// The hosts whose repository paths are case-insensitive (`Team/Infra` and `team/infra` name
/// one repository), so the owner derived from them is lower-cased. Other hosts keep the path's
/// case: a self-hosted server (a plain SSH or file path, Gitea, cgit) may hold both as two
/// repositories, and stackctl cannot tell which software a host runs; `owner:` in
/// `stackctl.yaml` settles any other case.
pub const CASE_INSENSITIVE_HOSTS: [&str; 6] = [
    "github.com",
    "ssh.github.com",
    "gitlab.com",
    "altssh.gitlab.com",
    "bitbucket.org",
    "altssh.bitbucket.org",
];

/// Returns the owner a git remote URL gives: the host and path, without scheme, user, port,
/// `.git` or trailing `/` (`git@gitlab.a.example:team/infra` gives `gitlab.a.example/team/infra`,
/// `https://github.com/team/infra.git` gives `github.com/team/infra`). A local path or
/// `file://` remote has no host and gives its path without the leading `/`
/// (`/srv/git/org/repo.git` gives `srv/git/org/repo`). The host is always lower-cased, the
/// path only on the [`CASE_INSENSITIVE_HOSTS`] (`https://github.com/Team/Infra` gives
/// `github.com/team/infra`); an `ssh.` or `altssh.` host stands for its site.
///
/// The error, for a URL that gives no usable owner, asks for `owner:` in `stackctl.yaml`.
pub fn owner_from_remote_url(url: &str) -> Result<Owner, String> {
    owner_with_case(url, false)
}

/// [`owner_from_remote_url`], keeping the path's case on every host when `keep_case` (the
/// rule of stackctl 0.2).
pub(super) fn owner_with_case(url: &str, keep_case: bool) -> Result<Owner, String> {
    let ask = "set `owner:` in stackctl.yaml (any name that is the same on every checkout)";
    let (host, path) = split_remote_url(url);
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segments.is_empty() {
        return Err(format!(
            "cannot derive an owner from the git remote: its URL names no repository path; {ask}"
        ));
    }
    let url = url.trim();
    let absolute = url.starts_with('/')
        || url
            .get(..7)
            .is_some_and(|s| s.eq_ignore_ascii_case("file://"));
    if (host.is_empty() && !absolute) || segments.iter().any(|s| *s == "." || *s == "..") {
        return Err(format!(
            "cannot derive an owner from the git remote: it is a relative path, which differs \
             between checkouts; {ask}"
        ));
    }
    let path = segments.join("/");
    let host = host.to_ascii_lowercase();
    let text = if host.is_empty() {
        path
    } else if !keep_case && CASE_INSENSITIVE_HOSTS.contains(&host.as_str()) {
        let site = host
            .strip_prefix("altssh.")
            .or_else(|| host.strip_prefix("ssh."))
            .unwrap_or(&host);
        let path = path.to_ascii_lowercase();
        // `Infra.GIT` names the repository `infra` too, once the case is gone.
        let path = path.strip_suffix(".git").unwrap_or(&path);
        format!("{site}/{path}")
    } else {
        format!("{host}/{path}")
    };
    Owner::parse(&text)
        .map_err(|message| format!("cannot use the git remote as the owner: {message}; {ask}"))
}

/// Splits a git remote URL into its host (empty for a local path) and its path, without user,
/// port, `.git` or trailing `/`.
pub(super) fn split_remote_url(url: &str) -> (&str, &str) {
    let url = url.trim().trim_end_matches('/');
    let url = url
        .strip_suffix(".git")
        .unwrap_or(url)
        .trim_end_matches('/');
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if scheme.eq_ignore_ascii_case("file") {
            return ("", path);
        }
        let host = authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host);
        // `host:port`, or `[v6]:port`; an IPv6 host keeps its brackets (and is refused).
        let host = match host.strip_prefix('[') {
            Some(_) => host.split_inclusive(']').next().unwrap_or(host),
            None => host.split_once(':').map_or(host, |(host, _)| host),
        };
        return (host, path);
    }
    // git's scp-like form, `[user@]host:path`: a colon before any slash.
    match url.split_once(':') {
        Some((host, path)) if !host.contains('/') => {
            (host.rsplit_once('@').map_or(host, |(_, host)| host), path)
        }
        _ => ("", url),
    }
}

/// Returns the owners that earlier versions of stackctl derived from a remote URL, each once:
/// 0.1's host-less `org/repo` ([`legacy_owner_from_remote_url`]) and 0.2's host and path with
/// the path's letter case as written. Jobs submitted under them need migrating.
pub(super) fn legacy_owners_from_remote_url(url: &str) -> Vec<LegacyOwner> {
    let mut owners: Vec<LegacyOwner> = Vec::new();
    let candidates = [
        (
            legacy_owner_from_remote_url(url).and_then(|o| Owner::parse(&o).ok()),
            "stackctl before 0.2 derived from this repo's remote without its host",
        ),
        (
            owner_with_case(url, true).ok(),
            "stackctl 0.2 derived from this repo's remote with its letter case as written (the \
             host treats the path case-insensitively, so it is now lower-cased)",
        ),
    ];
    for (owner, rule) in candidates {
        if let Some(owner) = owner
            && !owners.iter().any(|o| o.owner == owner)
        {
            owners.push(LegacyOwner { owner, rule });
        }
    }
    owners
}

/// Returns the owner that stackctl 0.1 derived from a remote URL: its last two path
/// segments, `org/repo`, without the host. Jobs submitted under it need migrating.
pub fn legacy_owner_from_remote_url(url: &str) -> Option<String> {
    let url = url.trim().trim_end_matches('/');
    let url = url.strip_suffix(".git").unwrap_or(url);
    let path = match url.split_once("://") {
        Some((_, rest)) => rest.split_once('/').map_or("", |(_, path)| path),
        None => match url.split_once(':') {
            Some((host, path)) if !host.contains('/') => path,
            _ => url,
        },
    };
    let mut segments = path.rsplit('/').filter(|s| !s.is_empty());
    let repo = segments.next()?;
    let org = segments.next()?;
    Some(format!("{org}/{repo}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_is_the_host_and_path_of_any_remote_url_form() {
        for (url, owner) in [
            ("https://github.com/team/infra.git", "github.com/team/infra"),
            ("https://github.com/team/infra", "github.com/team/infra"),
            ("https://github.com/team/infra/", "github.com/team/infra"),
            (
                "https://github.com/team/infra.git/",
                "github.com/team/infra",
            ),
            (
                "http://user:secret@git.example:8443/team/infra.git",
                "git.example/team/infra",
            ),
            ("https://GitHub.com/Team/infra", "github.com/team/infra"),
            ("https://Git.Example/Team/Infra", "git.example/Team/Infra"),
            (
                "git@gitlab.a.example:team/infra",
                "gitlab.a.example/team/infra",
            ),
            (
                "git@gitlab.a.example:team/infra.git",
                "gitlab.a.example/team/infra",
            ),
            (
                "gitlab.a.example:/team/infra",
                "gitlab.a.example/team/infra",
            ),
            ("ssh://git@host:22/org/repo.git", "host/org/repo"),
            ("ssh://host/group/sub/repo", "host/group/sub/repo"),
            ("/srv/git/org/repo.git", "srv/git/org/repo"),
            ("file:///srv/git/org/repo/", "srv/git/org/repo"),
            ("  https://github.com/team/infra\n", "github.com/team/infra"),
        ] {
            assert_eq!(
                owner_from_remote_url(url).map(|o| o.to_string()),
                Ok(owner.to_owned()),
                "{url}"
            );
        }
    }

    #[test]
    fn the_same_repo_on_two_hosts_gets_two_owners() {
        let a = owner_from_remote_url("git@gitlab.a.example:team/infra").unwrap();
        let b = owner_from_remote_url("https://github.com/team/infra").unwrap();
        assert_ne!(a, b);
        // Both collided under the old rule.
        assert_eq!(
            legacy_owner_from_remote_url("git@gitlab.a.example:team/infra"),
            legacy_owner_from_remote_url("https://github.com/team/infra"),
        );
    }

    #[test]
    fn remotes_differing_only_by_case_give_one_owner_on_case_insensitive_hosts() {
        for urls in [
            [
                "https://github.com/Acme/Web-App",
                "git@github.com:acme/web-app.git",
            ],
            [
                "ssh://git@ssh.github.com:443/ACME/web-app.git",
                "https://github.com/acme/Web-App",
            ],
            [
                "https://GITLAB.com/Group/Sub/Proj",
                "git@gitlab.com:group/sub/proj",
            ],
            [
                "ssh://git@altssh.gitlab.com:443/group/Sub/proj",
                "https://gitlab.com/group/sub/proj",
            ],
            [
                "https://bitbucket.org/Acme/Repo.git",
                "git@bitbucket.org:acme/repo",
            ],
            [
                "https://github.com/Acme/Web-App.GIT",
                "github.com:acme/web-app",
            ],
        ] {
            let [a, b] = urls.map(|url| owner_from_remote_url(url).unwrap());
            assert_eq!(a, b, "{urls:?}");
            assert_eq!(a.as_str(), a.as_str().to_ascii_lowercase(), "{urls:?}");
        }
        // Elsewhere the path keeps its case (the host never does): `owner:` decides.
        for (url, owner) in [
            (
                "git@GIT.Corp.example:Acme/Repo",
                "git.corp.example/Acme/Repo",
            ),
            (
                "https://github.example.com/Acme/Repo",
                "github.example.com/Acme/Repo",
            ),
            ("/srv/Git/Acme/Repo.git", "srv/Git/Acme/Repo"),
        ] {
            assert_eq!(owner_from_remote_url(url).unwrap().as_str(), owner, "{url}");
        }
    }

    #[test]
    fn unusable_remotes_ask_for_an_owner_in_stackctl_yaml() {
        let long = format!("/srv/{}/repo.git", "x".repeat(130));
        for url in [
            "https://github.com",
            "https://github.com/",
            "/",
            "repo",
            "../repos/infra.git",
            "/srv/git/my repo.git",
            "/srv/git/~me/repo",
            "git@[::1]:team/infra",
            long.as_str(),
        ] {
            let error = owner_from_remote_url(url).expect_err(url);
            assert!(
                error.contains("set `owner:` in stackctl.yaml"),
                "{url}: {error}"
            );
            assert!(!error.contains("secret"), "{error}");
        }
        let error = owner_from_remote_url("https://me:secret@github.com").unwrap_err();
        assert!(
            !error.contains("secret"),
            "a URL's password must not be printed: {error}"
        );
    }

    #[test]
    fn the_legacy_owner_is_the_old_org_repo_rule() {
        for url in [
            "https://github.com/org/repo.git",
            "git@github.com:org/repo.git",
            "ssh://git@host:22/org/repo.git",
            "/srv/git/org/repo.git",
            "file:///srv/git/org/repo/",
        ] {
            assert_eq!(
                legacy_owner_from_remote_url(url).as_deref(),
                Some("org/repo"),
                "{url}"
            );
        }
        assert_eq!(legacy_owner_from_remote_url("repo"), None);
    }
}
