//! Generated `/etc/passwd` and `/etc/group` for the container (unless `--no-passwd`):
//! root, nobody and the container user/group, as Charliecloud writes them. The user's entry
//! takes its name and GECOS from the host's `getpwuid` of the container uid (or a dummy
//! `charlie`); its home directory is `/`, as in Charliecloud, since the host's home path
//! means nothing in the image (`--home` binds it at `/home/$USER` and sets `$HOME`).

/// The host's account data for the container uid, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub gecos: String,
}

/// Contents of the container's `/etc/passwd`.
pub fn passwd_file(uid: u32, gid: u32, account: Option<&Account>) -> String {
    let mut s = String::new();
    if uid != 0 {
        s.push_str("root:x:0:0:root:/root:/bin/sh\n");
    }
    if uid != 65534 {
        s.push_str("nobody:x:65534:65534:nobody:/:/bin/false\n");
    }
    match account {
        Some(a) => s.push_str(&format!("{}:x:{uid}:{gid}:{}:/:/bin/sh\n", a.name, a.gecos)),
        None => s.push_str(&format!("charlie:x:{uid}:{gid}:Charlie:/:/bin/sh\n")),
    }
    s
}

/// Contents of the container's `/etc/group`.
pub fn group_file(gid: u32, name: Option<&str>) -> String {
    let mut s = String::new();
    if gid != 0 {
        s.push_str("root:x:0:\n");
    }
    if gid != 65534 {
        s.push_str("nogroup:x:65534:\n");
    }
    s.push_str(&format!("{}:x:{gid}:\n", name.unwrap_or("charliegroup")));
    s
}

/// Look up the host account of `uid` (NSS; may be absent, e.g. LDAP down).
pub fn lookup_account(uid: u32) -> Option<Account> {
    let u = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok()??;
    Some(Account {
        name: u.name,
        gecos: u.gecos.to_string_lossy().into_owned(),
    })
}

/// The host's home directory of `uid`, for when `$HOME` is unset (`srun --export=NONE`).
pub fn lookup_home(uid: u32) -> Option<std::path::PathBuf> {
    let u = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok()??;
    Some(u.dir).filter(|d| !d.as_os_str().is_empty())
}

/// Look up the host group name of `gid`.
pub fn lookup_group(gid: u32) -> Option<String> {
    nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
        .ok()?
        .map(|g| g.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_has_root_nobody_and_user_once() {
        let a = Account {
            name: "alice".into(),
            gecos: "Alice".into(),
        };
        assert_eq!(
            passwd_file(1000, 1000, Some(&a)),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n\
             alice:x:1000:1000:Alice:/:/bin/sh\n"
        );
        let root = Account {
            name: "root".into(),
            gecos: "root".into(),
        };
        assert_eq!(
            passwd_file(0, 0, Some(&root)),
            "nobody:x:65534:65534:nobody:/:/bin/false\nroot:x:0:0:root:/:/bin/sh\n"
        );
        assert!(passwd_file(1234, 5, None).ends_with("charlie:x:1234:5:Charlie:/:/bin/sh\n"));
    }

    #[test]
    fn group_has_root_nogroup_and_group_once() {
        assert_eq!(
            group_file(65534, Some("nogroup")),
            "root:x:0:\nnogroup:x:65534:\n"
        );
        assert_eq!(
            group_file(7, None),
            "root:x:0:\nnogroup:x:65534:\ncharliegroup:x:7:\n"
        );
    }
}
