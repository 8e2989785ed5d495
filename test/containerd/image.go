package containerd

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Media types of the OCI image specification (image-spec v1.0).
const (
	mediaTypeIndex    = "application/vnd.oci.image.index.v1+json"
	mediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	mediaTypeLayerGz  = "application/vnd.oci.image.layer.v1.tar+gzip"
)

// annotationImageName is the index annotation from which containerd's importer takes the
// full image name.
const annotationImageName = "io.containerd.image.name"

// layerTime is the modification time of every layer entry, so that an image built twice
// from the same files has the same digests.
var layerTime = time.Unix(0, 0)

// ImageFile is a file of an image's single layer.
type ImageFile struct {
	// Path is the absolute path inside the image, such as /bin/busybox.
	Path string
	// Mode is the permission bits of a regular file.
	Mode int64
	// Data is the content of a regular file.
	Data []byte
	// Link, when set, makes the entry a symbolic link to this target.
	Link string
}

// Image is a one-layer container image for the host's platform.
type Image struct {
	// Name is the full reference, such as ferry.test/pause:1.
	Name       string
	Files      []ImageFile
	Entrypoint []string
	Env        []string
}

// descriptor is an OCI content descriptor.
type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *platform         `json:"platform,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

// WriteOCIArchive writes img as a tar archive in the OCI image layout (an oci-layout file,
// index.json and blobs/sha256/), which `ctr images import` reads.
func WriteOCIArchive(file string, img Image) error {
	layer, diffID, err := buildLayer(img.Files)
	if err != nil {
		return fmt.Errorf("build layer of image %s: %w", img.Name, err)
	}

	config, err := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"config":       map[string]any{"Entrypoint": img.Entrypoint, "Env": img.Env},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{diffID}},
	})
	if err != nil {
		return fmt.Errorf("encode config of image %s: %w", img.Name, err)
	}
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     mediaTypeManifest,
		"config":        blobDescriptor(mediaTypeConfig, config),
		"layers":        []descriptor{blobDescriptor(mediaTypeLayerGz, layer)},
	})
	if err != nil {
		return fmt.Errorf("encode manifest of image %s: %w", img.Name, err)
	}

	manifestDesc := blobDescriptor(mediaTypeManifest, manifest)
	manifestDesc.Platform = &platform{Architecture: runtime.GOARCH, OS: "linux"}
	manifestDesc.Annotations = map[string]string{
		annotationImageName:                 img.Name,
		"org.opencontainers.image.ref.name": img.Name[strings.LastIndex(img.Name, ":")+1:],
	}
	index, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     mediaTypeIndex,
		"manifests":     []descriptor{manifestDesc},
	})
	if err != nil {
		return fmt.Errorf("encode index of image %s: %w", img.Name, err)
	}

	var archive bytes.Buffer
	tw := tar.NewWriter(&archive)
	entries := []struct {
		name string
		data []byte
	}{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"index.json", index},
		{blobPath(layer), layer},
		{blobPath(config), config},
		{blobPath(manifest), manifest},
	}
	for _, dir := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(dirHeader(dir)); err != nil {
			return fmt.Errorf("write archive of image %s: %w", img.Name, err)
		}
	}
	for _, e := range entries {
		if err := writeTarFile(tw, e.name, 0o644, e.data); err != nil {
			return fmt.Errorf("write archive of image %s: %w", img.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("write archive of image %s: %w", img.Name, err)
	}
	if err := os.WriteFile(file, archive.Bytes(), 0o644); err != nil {
		return fmt.Errorf("write image archive %s: %w", file, err)
	}
	return nil
}

// buildLayer returns the gzip-compressed layer tar of files and its diff ID, the digest of
// the uncompressed tar. Parent directories get entries of their own.
func buildLayer(files []ImageFile) ([]byte, string, error) {
	dirs := map[string]bool{}
	for _, f := range files {
		if !path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path || f.Path == "/" {
			return nil, "", fmt.Errorf("invalid image path %q: use a clean absolute path",
				f.Path)
		}
		for d := path.Dir(f.Path); d != "/"; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	sortedDirs := make([]string, 0, len(dirs))
	for d := range dirs {
		sortedDirs = append(sortedDirs, d)
	}
	slices.Sort(sortedDirs)

	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	for _, d := range sortedDirs {
		if err := tw.WriteHeader(dirHeader(d[1:] + "/")); err != nil {
			return nil, "", err
		}
	}
	for _, f := range files {
		name := f.Path[1:]
		if f.Link != "" {
			h := &tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: f.Link,
				Mode: 0o777, ModTime: layerTime}
			if err := tw.WriteHeader(h); err != nil {
				return nil, "", err
			}
			continue
		}
		if err := writeTarFile(tw, name, f.Mode, f.Data); err != nil {
			return nil, "", err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, "", err
	}
	diffID := digestOf(raw.Bytes())

	var compressed bytes.Buffer
	zw := gzip.NewWriter(&compressed)
	if _, err := zw.Write(raw.Bytes()); err != nil {
		return nil, "", err
	}
	if err := zw.Close(); err != nil {
		return nil, "", err
	}
	return compressed.Bytes(), diffID, nil
}

func dirHeader(name string) *tar.Header {
	return &tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: layerTime}
}

func writeTarFile(tw *tar.Writer, name string, mode int64, data []byte) error {
	h := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)),
		ModTime: layerTime}
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}

func digestOf(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func blobDescriptor(mediaType string, data []byte) descriptor {
	return descriptor{MediaType: mediaType, Digest: digestOf(data), Size: int64(len(data))}
}

func blobPath(data []byte) string {
	return "blobs/sha256/" + strings.TrimPrefix(digestOf(data), "sha256:")
}

// busyboxApplets are the commands of the busybox image, each a symbolic link to
// /bin/busybox.
var busyboxApplets = []string{"sh", "sleep", "ping", "nc", "ip", "cat", "echo", "hostname"}

// BusyboxImage returns an image of a static busybox binary with links for the applets that
// the tests run, and /tmp.
func BusyboxImage(name, busyboxPath string) (Image, error) {
	data, err := os.ReadFile(busyboxPath)
	if err != nil {
		return Image{}, fmt.Errorf("read busybox binary: %w", err)
	}
	img := Image{
		Name:       name,
		Files:      []ImageFile{{Path: "/bin/busybox", Mode: 0o755, Data: data}},
		Entrypoint: []string{"/bin/sh"},
		Env:        []string{"PATH=/bin"},
	}
	for _, applet := range busyboxApplets {
		img.Files = append(img.Files, ImageFile{Path: "/bin/" + applet, Link: "busybox"})
	}
	img.Files = append(img.Files, ImageFile{Path: "/tmp/.keep", Mode: 0o644})
	return img, nil
}

// PauseImage returns the sandbox image: the static pause binary as /pause.
func PauseImage(name, pausePath string) (Image, error) {
	data, err := os.ReadFile(pausePath)
	if err != nil {
		return Image{}, fmt.Errorf("read pause binary: %w", err)
	}
	return Image{
		Name:       name,
		Files:      []ImageFile{{Path: "/pause", Mode: 0o755, Data: data}},
		Entrypoint: []string{"/pause"},
	}, nil
}
