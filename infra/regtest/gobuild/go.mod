// A wrapper module that pins lnd (and, through lnd's own go.mod, btcd) for the regtest tier.
// lnd's go.mod has replace directives, which `go install pkg@version` refuses; a wrapper that copies them
// builds lnd's commands from the Go module proxy. Keep the replaces in step with lnd's go.mod when bumping.
// Do not `go mod tidy` here: tidy resolves test imports of dependencies and upgrades modules (x/crypto,
// juju/*) past what lnd released with; `go build -mod=mod` records exactly what the build needs.
module satflow.local/regtest

go 1.23.12

require github.com/lightningnetwork/lnd v0.19.3-beta

require github.com/btcsuite/btcd v0.24.3-0.20250318170759-4f4ea81776d6 // indirect

// Copied from github.com/lightningnetwork/lnd v0.19.3-beta go.mod.
replace github.com/ulikunitz/xz => github.com/ulikunitz/xz v0.5.11

replace github.com/gogo/protobuf => github.com/gogo/protobuf v1.3.2

replace google.golang.org/protobuf => github.com/lightninglabs/protobuf-go-hex-display v1.30.0-hex-display
