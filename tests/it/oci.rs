//! The OCI model (`src/oci`) through the real binaries: images pulled for several
//! platforms from a real registry (Debian's `docker-registry`, see `registry.rs`) are
//! written out as OCI layouts (`ch-convert -o oci`) and pushed back (`ch-image push`), and
//! other tools (skopeo, umoci) read what Grove wrote with the right platform fields.

use std::path::Path;
use std::process::Command;

use crate::common::*;
use crate::registry::Registry;

/// The platforms tested: Charliecloud's spelling, OCI architecture and variant.
const PLATFORMS: [(&str, &str, Option<&str>); 3] = [
    ("amd64", "amd64", None),
    ("arm64/v8", "arm64", Some("v8")),
    ("arm/v7", "arm", Some("v7")),
];

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// An OCI layout at `dir/lay` holding, under tag `multi`, an image index with one tiny
/// image per platform of [`PLATFORMS`]: one layer with `/arch` (the spelling), a config
/// with its architecture and variant, and the index entry's platform saying the same.
fn multi_arch_layout(dir: &Path) {
    sh(&format!(
        r#"
        cd {d}
        mkdir -p lay/blobs/sha256
        printf '{{"imageLayoutVersion":"1.0.0"}}' > lay/oci-layout
        blob() {{ h=$(sha256sum "$1" | cut -d' ' -f1); cp "$1" lay/blobs/sha256/$h; echo $h; }}
        entries=
        for spec in amd64: arm64:v8 arm:v7; do
            a=${{spec%%:*}}; v=${{spec#*:}}; t=$a$v
            var=; [ -n "$v" ] && var=",\"variant\":\"$v\""
            mkdir l-$t && echo "$a${{v:+/$v}}" > l-$t/arch
            tar --owner=0 --group=0 -C l-$t -cf l-$t.tar . && gzip -n -c l-$t.tar > l-$t.tgz
            L=$(blob l-$t.tgz); D=$(sha256sum l-$t.tar | cut -d' ' -f1)
            printf '{{"architecture":"%s"%s,"os":"linux","config":{{"Cmd":["/bin/sh"]}},"rootfs":{{"type":"layers","diff_ids":["sha256:%s"]}},"history":[{{"created_by":"layer for %s"}}]}}' \
                $a "$var" $D $t > c-$t.json
            C=$(blob c-$t.json)
            printf '{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}}]}}' \
                $C $(stat -c %s c-$t.json) $L $(stat -c %s l-$t.tgz) > m-$t.json
            M=$(blob m-$t.json)
            entries="$entries${{entries:+,}}{{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:$M\",\"size\":$(stat -c %s m-$t.json),\"platform\":{{\"architecture\":\"$a\",\"os\":\"linux\"$var}}}}"
        done
        printf '{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[%s]}}' "$entries" > idx.json
        I=$(blob idx.json)
        printf '{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:%s","size":%s,"annotations":{{"org.opencontainers.image.ref.name":"multi"}}}}]}}' \
            $I $(stat -c %s idx.json) > lay/index.json
        "#,
        d = dir.display()
    ));
}

/// The image config of `image` (a skopeo image name), as skopeo reads it.
fn skopeo_config(image: &str) -> serde_json::Value {
    let out = ok(Command::new("skopeo").args(["inspect", "--tls-verify=false", "--config", image]));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{image}: config is not JSON: {e}\n{out}"))
}

/// Check the platform fields of an image config read back by skopeo.
fn assert_platform(cfg: &serde_json::Value, arch: &str, variant: Option<&str>, what: &str) {
    assert_eq!(cfg["architecture"], arch, "{what}: {cfg}");
    assert_eq!(cfg["os"], "linux", "{what}: {cfg}");
    match variant {
        Some(v) => assert_eq!(cfg["variant"], v, "{what}: {cfg}"),
        None => assert!(cfg.get("variant").is_none(), "{what}: {cfg}"),
    }
}

#[test]
fn images_pulled_for_each_platform_export_and_push_valid_oci_platform_fields() {
    let Some(r) = Registry::start() else { return };
    if !have("umoci") {
        skip("umoci not installed (apt-get install umoci)");
        return;
    }
    let s = Scratch::new("oci-arch");
    let st = s.storage();
    multi_arch_layout(&s.path);
    let refr = format!("{}/multi/arches", r.host());
    ok(Command::new("skopeo")
        .args(["copy", "--quiet", "--all", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:multi", s.join("lay").display()))
        .arg(format!("docker://{refr}:latest")));
    // The multi-platform layout read directly: the host's entry of the nested index.
    if std::env::consts::ARCH == "x86_64" {
        ok(tool("ch-convert")
            .arg("-q")
            .arg("-s")
            .arg(&st)
            .arg(s.join("lay"))
            .arg("from-layout"));
        let checkout = ok(r.ch_image(&st).args(["checkout", "from-layout"]));
        let arch = std::fs::read_to_string(Path::new(checkout.trim()).join("arch"));
        assert_eq!(arch.expect("read /arch").trim(), "amd64");
    }
    for (spelling, arch, variant) in PLATFORMS {
        let name = format!("img-{arch}{}", variant.unwrap_or(""));
        ok(r.ch_image(&st)
            .args(["--arch", spelling, "pull", &refr, &name]));
        // The image pulled is the one for that platform, its architecture stored as spelt.
        let info = ok(r.ch_image(&st).args(["list", &name]));
        assert!(info.contains(spelling), "{spelling}: {info}");
        let checkout = ok(r.ch_image(&st).args(["checkout", &name]));
        let file = Path::new(checkout.trim()).join("arch");
        assert_eq!(
            std::fs::read_to_string(&file).expect("read /arch").trim(),
            spelling
        );

        // Exported as an OCI layout: skopeo reads the config and copies the layout
        // (verifying every digest), umoci unpacks it.
        let dir = s.join(format!("{name}.oci"));
        ok(tool("ch-convert")
            .arg("-q")
            .arg("-s")
            .arg(&st)
            .args(["-o", "oci", &name])
            .arg(&dir));
        let src = format!("oci:{}:latest", dir.display());
        assert_platform(
            &skopeo_config(&src),
            arch,
            variant,
            &format!("{spelling}: ch-convert -o oci"),
        );
        let raw: serde_json::Value =
            serde_json::from_str(&ok(Command::new("skopeo").args(["inspect", "--raw", &src])))
                .expect("manifest JSON");
        assert_eq!(
            raw["mediaType"],
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert_eq!(raw["layers"].as_array().map(Vec::len), Some(1), "{raw}");
        let copy = s.join(format!("{name}.copy"));
        ok(Command::new("skopeo")
            .args(["copy", "--quiet", &src])
            .arg(format!("oci:{}:x", copy.display())));
        assert_platform(
            &skopeo_config(&format!("oci:{}:x", copy.display())),
            arch,
            variant,
            &format!("{spelling}: skopeo copy of the layout"),
        );
        let bundle = s.join(format!("{name}.bundle"));
        ok(Command::new("umoci")
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:latest", dir.display()))
            .arg(&bundle));
        assert_eq!(
            std::fs::read_to_string(bundle.join("rootfs/arch"))
                .expect("umoci-unpacked /arch")
                .trim(),
            spelling
        );

        // Read back, the layout gives the same architecture.
        let back = format!("back-{name}");
        ok(tool("ch-convert")
            .arg("-q")
            .arg("-s")
            .arg(&st)
            .arg(&dir)
            .arg(&back));
        let info = ok(r.ch_image(&st).args(["list", &back]));
        assert!(info.contains(spelling), "{spelling}: read back: {info}");

        // Pushed: the registry's copy has the same platform fields.
        let dest = format!("{}/pushed/{name}:v1", r.host());
        ok(r.ch_image(&st).args(["push", &name, &dest]));
        assert_platform(
            &skopeo_config(&format!("docker://{dest}")),
            arch,
            variant,
            &format!("{spelling}: ch-image push"),
        );
    }
}
