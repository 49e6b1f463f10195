-- DropForeignKey
ALTER TABLE "decision_log" DROP CONSTRAINT "decision_log_shopId_fkey";

-- DropTable
DROP TABLE "decision_log";
