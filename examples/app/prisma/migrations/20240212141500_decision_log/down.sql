-- DropIndex
DROP INDEX "decision_log_status_created_at_idx";

-- DropIndex
DROP INDEX "decision_log_shopId_created_at_idx";

-- DropTable
PRAGMA foreign_keys=off;
DROP TABLE "decision_log";
PRAGMA foreign_keys=on;
