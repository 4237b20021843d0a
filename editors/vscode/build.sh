#!/usr/bin/env bash
# Builds, unit-tests and packages the VS Code extension (editors/vscode/souffleur-<version>.vsix).
# Needs Node.js >= 20 and npm; installs exactly what package-lock.json pins.
set -euo pipefail
cd "$(dirname "$0")"
npm ci
npm run build
npm test
npm run package
