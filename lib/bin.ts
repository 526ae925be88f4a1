#!/usr/bin/env node
// The `esolm` executable (package.json "bin"): see cli.ts.
import { main } from './cli.js';

void main();
