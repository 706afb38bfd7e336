module pyrite.dev/deploy/demo

go 1.21
